"""Adapters to video-call frameworks, each an optional extra (docs/calls.md): ``livekit`` (LiveKit Agents'
avatar interface) and ``pipecat`` (a Pipecat frame processor). They wrap :class:`fada_rt.api.StreamingAvatar`."""
