"""Regenerate ``tales.txt``: simple English stories from a small grammar (deterministic).

    python sweep/problems/corpus/make_corpus.py            # writes sweep/problems/corpus/tales.txt

Choices are Zipf-weighted, so a few characters, places and phrasings are frequent and many
are rare: the rare n-grams are the "tail" that ``tail_nll`` on text measures and that
recursive training forgets first. One story per paragraph (blank-line separated), so
``TextCorpus`` splits train and test by story.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 2024
STORIES = 600

HEROES = ["a little fox", "a small girl named Mia", "an old bear", "a brave boy named Tom",
          "a curious cat", "a young rabbit", "a quiet owl", "a clever mouse", "a tall giraffe",
          "a shy turtle", "a lonely wolf", "a kind dragon", "a sleepy hedgehog",
          "a tiny axolotl", "a wandering narwhal", "a retired lighthouse keeper"]
PLACES = ["the forest", "a small village", "the river", "the hills", "a big city",
          "the seaside", "an old castle", "the desert", "a snowy mountain", "the marsh",
          "a floating market", "the salt flats"]
WANTS = ["to find a friend", "to see the sea", "to build a house", "to learn to sing",
         "to find the lost key", "to bake a cake", "to fly like a bird", "to count the stars",
         "to cross the bridge", "to mend a broken lantern", "to decipher an old map"]
OBSTACLES = ["a big storm came", "the path was blocked by a rock", "it grew very dark",
             "a river was too wide to swim", "a grumpy troll stood in the way",
             "the wind blew the map away", "everyone was asleep", "a fog rolled in",
             "the ice began to crack"]
HELPERS = ["a wise owl", "a friendly duck", "an old woman", "a kind farmer", "a gentle giant",
           "a talking tree", "a band of ants", "a lost astronaut"]
FEELINGS = ["happy", "sad", "tired", "scared", "proud", "hungry", "brave", "grateful",
            "bewildered", "melancholy"]
ENDINGS = ["and they lived happily ever after.", "and they became best friends.",
           "and the day ended with a warm supper.", "and the stars came out to watch.",
           "and nobody ever forgot that day.", "and the lantern glowed until morning."]
# Rare constructions (a few per cent of stories each): long-range, unusual syntax.
RARE = ["Nevertheless, {h} did not give up, for it had promised its grandmother.",
        "Had {h} known what waited in {p}, it would have packed an umbrella.",
        "Not once, not twice, but seven times did {h} try.",
        "Whereupon {h} remarked, quite unexpectedly, that the moon smelled of cheese."]


def zipf_choice(rng: random.Random, items: list[str], exponent: float = 1.1) -> str:
    weights = [1.0 / (i + 1) ** exponent for i in range(len(items))]
    return rng.choices(items, weights=weights)[0]


def story(rng: random.Random) -> str:
    hero, place = zipf_choice(rng, HEROES), zipf_choice(rng, PLACES)
    name = hero.split(" named ")[-1] if " named " in hero else "the " + hero.split(" ", 1)[1]
    opener = rng.choice(["Once upon a time", "Long ago", "One morning", "One day"])
    lines = [f"{opener}, {hero} lived in {place}.",
             f"Every day, {name} wanted {zipf_choice(rng, WANTS)}."]
    for _ in range(rng.randint(1, 3)):
        lines.append(f"But {zipf_choice(rng, OBSTACLES)}, and {name} felt {zipf_choice(rng, FEELINGS)}.")
        if rng.random() < 0.06:
            lines.append(rng.choice(RARE).format(h=name, p=place))
        lines.append(f"Then {zipf_choice(rng, HELPERS)} came to help, and {name} felt "
                     f"{zipf_choice(rng, FEELINGS)} again.")
    lines.append(f"In the end, {name} went home, {zipf_choice(rng, ENDINGS)}")
    return " ".join(lines)


def main(out: Path | None = None) -> None:
    out = out or Path(__file__).with_name("tales.txt")
    rng = random.Random(SEED)
    out.write_text("\n\n".join(story(rng) for _ in range(STORIES)) + "\n")


if __name__ == "__main__":
    main()
