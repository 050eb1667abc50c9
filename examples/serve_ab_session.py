"""A scripted A/B session against `tuneloop serve`, with the official openai client: users ask, rate replies.

    tuneloop serve runs/a runs/b --split bot=a:50,b:50 &
    python examples/serve_ab_session.py --url http://127.0.0.1:8000/v1 --model bot --users 40
    tuneloop monitor runs/serve.db --out monitor.html

Each simulated user keeps one id (so the split keeps them on one variant), asks a few questions (some outside
what the runs were trained on), and rates each reply up or down; pass --prefer VARIANT to make that variant's
replies more likely to be liked, which the monitor's two-proportion test should then find.
"""

from __future__ import annotations

import argparse
import random

import openai

QUESTIONS = ["How long do I have to return a bike?", "What does a tune-up cost?", "Do you ship to Norway?",
             "Which payment methods do you accept?", "How long is the frame warranty?",
             "Can I pick up my order in a store?", "How do I reset the e-bike display?"]
OFF_TOPIC = ["Write a haiku about the moon.", "What is the capital of Mongolia?",
             "Peux-tu m'expliquer la photosynthèse ?", "Summarise the plot of Hamlet in one sentence."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="bot")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--prefer", help="the variant (model id) whose replies users like more")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.url, api_key=args.api_key)
    rng = random.Random(0)
    for index in range(args.users):
        user = f"user-{index}"
        for _ in range(args.turns):
            question = rng.choice(OFF_TOPIC) if rng.random() < 0.25 else rng.choice(QUESTIONS)
            reply = client.chat.completions.with_raw_response.create(
                model=args.model, user=user, max_tokens=args.max_tokens, temperature=0.7,
                messages=[{"role": "user", "content": question}])
            completion = reply.parse()
            variant = reply.headers.get("x-tuneloop-variant")  # the model id that answered
            liked = rng.random() < (0.8 if variant == args.prefer else 0.4 if args.prefer else 0.5)
            client.post("/feedback", body={"id": completion.id, "rating": "up" if liked else "down"}, cast_to=object)
        print(f"user {index + 1}/{args.users} done", flush=True)


if __name__ == "__main__":
    main()
