"""What the synthetic world's voices say (world speech v2, docs/design.md §6).

English sentences come from a small grammar (statements, questions, numbers, lists, exclamations)
over word lists, so the texts never repeat in practice and cover every English phoneme; a few
hundred fixed sentences would teach the model the sentences. The other languages espeak-ng
speaks get a handful of everyday sentences each: enough for their phonemes and rhythm.
"""

from __future__ import annotations

import numpy as np

SUBJECTS = ("the teacher", "my brother", "our neighbour", "a quiet child", "the old man", "she", "he", "we",
            "they", "the pilot", "your friend", "the whole team", "nobody", "the new doctor", "my aunt",
            "the baker", "a tall woman", "the judge", "everyone here", "the driver")
VERBS = ("bought", "painted", "forgot", "carried", "found", "built", "opened", "watched", "borrowed", "moved",
         "cleaned", "measured", "fixed", "pushed", "wanted", "checked", "shared", "brought", "loved", "visited")
OBJECTS = ("a blue umbrella", "the heavy box", "seven apples", "the broken window", "a map of the city",
           "the wooden boat", "my phone", "a cup of coffee", "the garden fence", "an orange jacket",
           "the evening paper", "two old chairs", "the big red barn", "a pair of shoes", "the kitchen table",
           "a small yellow bird", "the mountain path", "the violin", "a bag of rice", "the photographs")
PLACES = ("at the station", "near the river", "in the morning", "after lunch", "before the storm",
          "on Thursday", "behind the school", "at midnight", "in the office", "by the beach", "last summer",
          "under the bridge", "during the game", "in Boston", "at the zoo")
ADVERBS = ("quickly", "carefully", "again", "slowly", "happily", "quietly", "badly", "twice", "at once", "anyway")
QUESTIONS = ("why did", "when will", "how could", "where did", "would", "should", "can", "did")
BASE_VERBS = ("buy", "paint", "forget", "carry", "find", "build", "open", "watch", "borrow", "move", "clean",
              "measure", "fix", "push", "want", "check", "share", "bring", "love", "visit")
EXCLAIMS = ("Oh no!", "Wow, look at that!", "Really?", "Well, maybe.", "Yes, of course.", "Hmm, I am not sure.",
            "Thank you so much!", "Please wait a moment.", "Good morning, everybody.", "That is amazing!",
            "Absolutely not.", "Okay, let us go.")
NUMBERS = ("three", "seventeen", "forty two", "one hundred", "nine", "twelve", "fifty five", "eight hundred")

OTHER_LANGUAGES = {
    "es": ("Buenos días, ¿cómo estás?", "Mañana vamos a la playa con mis amigos.", "El perro come pan en la cocina.",
           "No sé dónde está la estación.", "Me gusta mucho la música de la radio.", "¿Puedes cerrar la ventana, por favor?"),
    "de": ("Guten Morgen, wie geht es dir?", "Morgen fahren wir mit dem Zug nach Berlin.", "Das Wetter ist heute sehr schön.",
           "Ich habe meinen Schlüssel vergessen.", "Kannst du mir bitte helfen?", "Die Kinder spielen im Garten."),
    "fr": ("Bonjour, comment allez-vous?", "Nous partons demain matin pour Paris.", "Le chat dort sur la chaise.",
           "Je ne trouve pas mes lunettes.", "Voulez-vous un peu de café?", "Il fait très beau aujourd'hui."),
    "it": ("Buongiorno, come stai?", "Domani andiamo al mare con la famiglia.", "La pizza è buonissima.",
           "Non capisco questa parola.", "Puoi aprire la porta, per favore?", "Il treno parte alle otto."),
    "pt": ("Bom dia, tudo bem?", "Amanhã vamos viajar para o Porto.", "O café está muito quente.",
           "Onde fica a biblioteca?", "Eu gosto de ler livros à noite."),
    "nl": ("Goedemorgen, hoe gaat het?", "Morgen gaan we naar de markt.", "De fiets staat voor het huis.",
           "Ik heb geen tijd vandaag.", "Wil je een kopje thee?"),
}


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def english_sentence(rng: np.random.Generator) -> str:
    """One English sentence from the grammar (statement, question, list, number or exclamation)."""
    form = float(rng.random())
    if form < 0.45:
        s = f"{_pick(rng, SUBJECTS)} {_pick(rng, VERBS)} {_pick(rng, OBJECTS)}"
        if rng.random() < 0.6:
            s += f" {_pick(rng, PLACES)}"
        if rng.random() < 0.3:
            s += f" {_pick(rng, ADVERBS)}"
        return s[0].upper() + s[1:] + "."
    if form < 0.65:
        s = f"{_pick(rng, QUESTIONS)} {_pick(rng, SUBJECTS)} {_pick(rng, BASE_VERBS)} {_pick(rng, OBJECTS)}"
        return s[0].upper() + s[1:] + "?"
    if form < 0.75:
        items = [_pick(rng, OBJECTS) for _ in range(3)]
        return f"We need {items[0]}, {items[1]} and {items[2]}."
    if form < 0.85:
        return f"{_pick(rng, SUBJECTS).capitalize()} counted {_pick(rng, NUMBERS)} {_pick(rng, ('birds', 'cars', 'people', 'stars'))}."
    return _pick(rng, EXCLAIMS)


def sentence(rng: np.random.Generator, language: str = "en") -> str:
    """A sentence in ``language`` ("en" or one of :data:`OTHER_LANGUAGES`)."""
    if language == "en":
        return english_sentence(rng)
    if language not in OTHER_LANGUAGES:
        raise ValueError(f"no texts for language {language!r}; known: en, {', '.join(OTHER_LANGUAGES)}")
    return _pick(rng, OTHER_LANGUAGES[language])
