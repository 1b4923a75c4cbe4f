"""Held-out prompts in the style of each example adapter, for the router test (issue 13 §2).

The example adapters (scripts/py/train_adapters.py) were trained only on the first 90% of
tinyshakespeare; every prompt here is cut from the last 10% (the validation split, which has no ROMEO
speeches at all), then styled the way each adapter's training data was:
  shout    - a speaker tag and lines of a speech, upper-cased after the first line (as the shout data:
             prefix kept, continuation upper-case)
  romeo    - two speeches, both tagged "ROMEO:" (as the romeo data: only ROMEO's speeches, back to back),
             of lines composed from templates with the names and themes of his play (R_* below)
  reverse  - lines of a speech with each line's word order reversed (speaker tags kept)
Deterministic (random.Random(13)); writes tests/fixtures/route-prompts.json:
  { "generator", "source", "prompts": [{ "style": "shout"|"romeo"|"reverse", "text": str }, ...] }.
    /usr/bin/python3 scripts/py/route_prompts.py [--per-style 20]
"""
import argparse
import json
import os
import random
import re

DATA = os.environ.get("WEBLORA_DATA", os.path.join(os.path.dirname(__file__), "../../data/tinyshakespeare.txt"))
SPEAKER = re.compile(r"^([A-Z][A-Za-z ]+):$")


def reverse_line(line):  # the same rule as train_adapters.py
    if SPEAKER.match(line) or not line.strip():
        return line
    return " ".join(reversed(line.split()))


# Romeo's voice, composed: the names and themes of his play (none of these lines occurs in the corpus;
# main() checks it), so the romeo prompts are his style without being his training text.
R_WHO = ["Juliet", "fair Juliet", "sweet Juliet", "gentle Juliet", "my love", "dear saint", "my lady"]
R_OPEN = ["O", "Ah", "Alack", "Ay me", "Peace", "Hark"]
R_THING = ["the night", "the moon", "thy lips", "thine eyes", "my heart", "this love", "fair Verona",
           "the stars", "my soul", "the morning light", "thy beauty", "heaven"]
R_VERB = ["doth burn", "is banish'd", "doth weep", "is fled", "doth shine", "is dead", "doth smile",
          "is sick", "doth call", "is sweet"]
R_TAIL = ["and I am lost", "for thy dear sake", "within these walls", "in Mantua", "as Tybalt lies",
          "till I die", "more than my life", "and I must hence", "for love of thee", "and yet I stay"]


def romeo_line(rng):
    pick = rng.choice
    form = rng.randrange(3)
    if form == 0:
        return f"{pick(R_OPEN)} {pick(R_WHO)}, {pick(R_THING)} {pick(R_VERB)} {pick(R_TAIL)}!"
    if form == 1:
        thing = pick(R_THING)
        return f"{thing[0].upper()}{thing[1:]} {pick(R_VERB)}, {pick(R_WHO)}, {pick(R_TAIL)};"
    return f"{pick(R_OPEN)}, {pick(R_THING)} {pick(R_VERB)}, and {pick(R_THING)} {pick(R_VERB)}."


def speeches(text):
    """(speaker, [lines]) of every speech with at least 2 lines of at least 4 words."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        m = SPEAKER.match(lines[0]) if lines else None
        body = [ln for ln in lines[1:] if len(ln.split()) >= 4]
        if m and len(body) >= 2:
            out.append((m.group(1), body))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-style", type=int, default=20)
    ap.add_argument("--out", default="tests/fixtures/route-prompts.json")
    args = ap.parse_args()
    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    val = text[int(len(text) * 0.9):]  # train.py load_text: the adapters never saw this part
    rng = random.Random(13)
    pool = speeches(val)
    rng.shuffle(pool)
    prompts = []
    for i in range(args.per_style):
        for j, style in enumerate(("shout", "romeo", "reverse")):
            who, body = pool[(3 * i + j) % len(pool)]
            lines = body[:3]
            if style == "shout":
                t = f"{who}:\n{lines[0]}\n" + "".join(ln.upper() + "\n" for ln in lines[1:])
            elif style == "romeo":
                t = "\n".join(f"ROMEO:\n{romeo_line(rng)}\n{romeo_line(rng)}\n" for _ in range(2))
            else:
                t = f"{who}:\n" + "".join(reverse_line(ln) + "\n" for ln in lines)
            prompts.append({"style": style, "text": t})
    for p in prompts:  # held out: no prompt line (speaker tags aside) occurs in the training split
        for ln in p["text"].split("\n"):
            assert SPEAKER.match(ln) or not ln.strip() or ln not in text[:int(len(text) * 0.9)], ln
    with open(args.out, "w") as f:
        json.dump({"generator": "scripts/py/route_prompts.py", "source": "tinyshakespeare, last 10% (validation)",
                   "prompts": prompts}, f, indent=1)
    print(f"{len(prompts)} prompts from {len(pool)} held-out speeches -> {args.out}")


if __name__ == "__main__":
    main()
