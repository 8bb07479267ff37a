"""A fada-rt avatar worker for LiveKit Agents: joins a LiveKit room, takes the agent's speech from LiveKit's
DataStreamAudioReceiver and publishes the talking portrait (video and the speech with it) through LiveKit's
AvatarRunner, the standard avatar-worker setup of LiveKit's own avatar examples (fada_rt.integrations.livekit).

    pip install -e ".[livekit]"
    python examples/livekit_worker.py --url wss://my-project.livekit.cloud --token <jwt> --image photo.jpg
    # or let it make the token (LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET in the environment):
    python examples/livekit_worker.py --room my-room --agent-identity my-agent --image photo.jpg

On the agent's side, send its speech to this worker instead of playing it in the room (livekit-agents >= 1.2):

    from livekit.agents.voice.avatar import DataStreamAudioOutput
    session.output.audio = DataStreamAudioOutput(ctx.room, destination_identity="fada-avatar",
                                                 wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                                                 wait_playback_start=True)  # AvatarRunner reports it

and ``AgentSession(..., resume_false_interruption=False)`` (this audio output cannot pause). The worker runs
until the room disconnects or the agent leaves.

Not tested end to end in this repository (no LiveKit server in CI): it is checked to import and to print its
--help; the generator it runs is tested with LiveKit's real classes in tests/test_integration_livekit.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from livekit import api, rtc
from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioReceiver
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

from fada_rt.api import StreamingAvatar
from fada_rt.assets import EXAMPLE_IMAGE
from fada_rt.integrations.livekit import FadaVideoGenerator

logger = logging.getLogger("fada-livekit-worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LIVEKIT_URL"),
                        help="LiveKit server URL (default: $LIVEKIT_URL)")
    parser.add_argument("--token", help="an access token to join the room with; without it one is made from "
                        "$LIVEKIT_API_KEY and $LIVEKIT_API_SECRET for --room and --identity")
    parser.add_argument("--room", help="the room to join (with a token made here)")
    parser.add_argument("--identity", default="fada-avatar", help="this worker's participant identity (with a "
                        "token made here; the agent's DataStreamAudioOutput sends to it)")
    parser.add_argument("--agent-identity", help="the agent whose speech to take (default: the first agent "
                        "participant in the room); with a token made here, the avatar publishes on its behalf")
    parser.add_argument("--image", default=str(EXAMPLE_IMAGE), help="the portrait (default: fada-rt's example face)")
    parser.add_argument("--output", choices=["full", "crop"], default="full",
                        help="publish the whole picture with the face pasted back (default), or the model's "
                        "face crop")
    parser.add_argument("--audio-rate", type=int, default=48000, help="rate of the published audio (Hz; "
                        "default: 48000)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: fada-rt's choice)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no LiveKit URL: pass --url or set LIVEKIT_URL")
    if args.token is None:
        missing = [name for name in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not os.environ.get(name)]
        if missing or not args.room:
            lacking = ", ".join(missing) + " not set" if missing else "--room missing"
            parser.error(f"no --token: pass one, or --room with LIVEKIT_API_KEY and LIVEKIT_API_SECRET set to "
                         f"make one ({lacking})")
    return args


def make_token(room: str, identity: str, agent_identity: str | None) -> str:
    """A token to join ``room`` as an agent participant, publishing on ``agent_identity``'s behalf if given."""
    token = (api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
             .with_identity(identity).with_name("fada-rt avatar").with_kind("agent")
             .with_grants(api.VideoGrants(room_join=True, room=room)))
    if agent_identity:
        token = token.with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
    return token.to_jwt()


async def serve(args: argparse.Namespace) -> None:
    # load the model and find the face before joining, so the avatar is ready when the agent speaks
    avatar = StreamingAvatar(args.image, output=args.output, audio_rate=args.audio_rate, threads=args.threads,
                             device=args.device)
    if avatar.portrait.note:
        logger.info("%s", avatar.portrait.note)
    generator = FadaVideoGenerator(avatar)
    room = rtc.Room()
    runner: AvatarRunner | None = None
    stop = asyncio.Event()
    try:
        token = args.token or make_token(args.room, args.identity, args.agent_identity)
        await room.connect(args.url, token)
        logger.info("joined room %s as %s", room.name, room.local_participant.identity)

        def on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
            agent = (participant.identity == args.agent_identity if args.agent_identity
                     else participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
            if agent:
                logger.info("agent %s left: stopping", participant.identity)
                stop.set()

        room.on("participant_disconnected", on_participant_disconnected)
        room.on("disconnected", lambda *_: stop.set())
        runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room, sender_identity=args.agent_identity),
                              video_gen=generator, options=generator.options)
        await runner.start()  # waits for the agent to join
        logger.info("avatar running: %sx%s at %s fps", generator.options.video_width,
                    generator.options.video_height, generator.options.video_fps)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.aclose()
        await generator.aclose()
        await room.disconnect()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        logger.info("interrupted: stopping")


if __name__ == "__main__":
    main()
