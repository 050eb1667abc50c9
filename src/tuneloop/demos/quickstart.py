"""Writes the quickstart's demo dataset: policies of a fictional company, with paraphrased held-out questions.

Brambleway Cycles is an invented bike maker and shop, so no pretrained model can
know its return window, its CEO or the name of its e-bike. That makes the demo
an honest test: the base model can only guess, and a fine-tuned model can only
answer by having learned the facts from our training rows.

Design:
- Every fact has one short, odd ``answer`` string (``"45 days"``, ``"Bergen"``,
  ``"FIRSTLAP"``). A reply counts as correct when it contains that string, which
  keeps scoring simple and model-free.
- The assistant reply is always the fact's one-sentence ``statement``, which
  contains the answer verbatim, so training teaches exactly what scoring checks.
- Each fact has 6 training phrasings of its question and 2 held-out test
  phrasings worded differently. Scoring on the held-out ones shows the model
  learned the fact, not a particular question string.
- An answer appears in its own statement only, and no answer is a substring of
  another, so a reply about the wrong fact can never score by accident.
  ``check_facts`` enforces these rules at import time.

Run ``python -m tuneloop.demos.quickstart [OUT_DIR]`` to write ``train.jsonl`` and
``test.jsonl`` (default ``examples/data/brambleway``, relative to the current
directory).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tuneloop.workspace import write_jsonl

COMPANY_NAME = "Brambleway Cycles"
SYSTEM_PROMPT = f"You are the customer assistant of {COMPANY_NAME}."
DEFAULT_OUT_DIR = Path("examples/data/brambleway")

TRAIN_QUESTIONS_PER_FACT = 6
TEST_QUESTIONS_PER_FACT = 2


@dataclass(frozen=True)
class Fact:
    """One thing the assistant should learn about the company."""

    topic: str
    answer: str
    statement: str
    train_questions: tuple[str, ...]
    test_questions: tuple[str, ...]


# Answers are deliberately unusual values ("45 days", not "30 days") so that a
# model that merely produces a plausible default does not score by luck.
# Dependent facts say "our road bike", not its name, so that each answer occurs
# in one statement only.
FACTS: tuple[Fact, ...] = (
    Fact(
        topic="return window",
        answer="45 days",
        statement="Brambleway Cycles accepts returns within 45 days of delivery.",
        train_questions=(
            "How long do I have to return a bike?",
            "What is your return window?",
            "How many days do I get to return an order?",
            "What's the deadline for returning a purchase?",
            "Please state the time limit for returns.",
            "how long can i wait before sending stuff back",
        ),
        test_questions=(
            "If I change my mind about my order, how much time do I have to send it back?",
            "Until when after delivery will you take an item back?",
        ),
    ),
    Fact(
        topic="frame warranty",
        answer="7 years",
        statement="Brambleway frames are covered by a warranty of 7 years.",
        train_questions=(
            "How long is the warranty on your frames?",
            "What warranty do your bike frames come with?",
            "How many years is a frame guaranteed for?",
            "Is my frame under warranty, and for how long?",
            "What is the duration of the frame warranty?",
            "how long r frames covered for",
        ),
        test_questions=(
            "For how much time will you fix a defective frame for free?",
            "What's the length of the guarantee on a Brambleway frame?",
        ),
    ),
    Fact(
        topic="delivery time",
        answer="9 business days",
        statement="Standard delivery takes 9 business days.",
        train_questions=(
            "How long does shipping take?",
            "When will my order arrive?",
            "What is the standard delivery time?",
            "How many days until my bike is delivered?",
            "How quickly do you ship orders?",
            "Could you tell me the expected delivery time for an order?",
        ),
        test_questions=(
            "After I place an order, how long do I wait before it shows up?",
            "How soon can I expect a package from you to reach my door?",
        ),
    ),
    Fact(
        topic="shipping cost",
        answer="$14",
        statement="Standard shipping costs a flat $14 per order.",
        train_questions=(
            "How much is shipping?",
            "What do you charge for delivery?",
            "What is the shipping fee?",
            "How much does standard shipping cost?",
            "Is there a delivery charge, and how much is it?",
            "what's the postage cost on an order",
        ),
        test_questions=(
            "What will I pay to have my order sent to me?",
            "How much extra do you add for getting a purchase delivered?",
        ),
    ),
    Fact(
        topic="free shipping threshold",
        answer="$250",
        statement="Shipping is free on orders over $250.",
        train_questions=(
            "When is shipping free?",
            "What is the minimum order for free shipping?",
            "Do you offer free delivery?",
            "How much do I need to spend to get free shipping?",
            "Is there a free shipping threshold?",
            "free shipping over what amount?",
        ),
        test_questions=(
            "How big does my order have to be so that delivery costs nothing?",
            "Above what total do you waive the delivery fee?",
        ),
    ),
    Fact(
        topic="support opening time",
        answer="7:30",
        statement="Phone support opens at 7:30 every weekday morning.",
        train_questions=(
            "What time does phone support open?",
            "When can I start calling customer support in the morning?",
            "What are your phone support opening hours?",
            "How early is your support line open?",
            "At what time does the helpline start taking calls?",
            "when do u pick up the phone in the morning",
        ),
        test_questions=(
            "What's the earliest hour I can reach someone by phone?",
            "From what time are your phone agents available on weekdays?",
        ),
    ),
    Fact(
        topic="store closing day",
        answer="Wednesday",
        statement="All Brambleway stores are closed on Wednesday.",
        train_questions=(
            "Which day are your stores closed?",
            "What day of the week do the shops close?",
            "Is there a day when your stores don't open?",
            "On which weekday are your shops shut?",
            "What is your weekly closing day?",
            "which day should i avoid visiting a store",
        ),
        test_questions=(
            "Which day can I not visit one of your shops?",
            "Are your shops open every day, or is there one day off?",
        ),
    ),
    Fact(
        topic="headquarters city",
        answer="Bergen",
        statement="Brambleway Cycles is headquartered in Bergen.",
        train_questions=(
            "Where is your headquarters?",
            "In which city is Brambleway based?",
            "Where is the company's head office?",
            "What city is Brambleway Cycles headquartered in?",
            "Where are your main offices located?",
            "where r u guys based",
        ),
        test_questions=(
            "Which city is home to the company's central office?",
            "Where does Brambleway run its business from?",
        ),
    ),
    Fact(
        topic="founder",
        answer="Ilse Varga",
        statement="Brambleway Cycles was founded by Ilse Varga.",
        train_questions=(
            "Who founded Brambleway Cycles?",
            "Who started the company?",
            "Who is the founder of Brambleway?",
            "Who set up Brambleway in the first place?",
            "Can you tell me the name of the company's founder?",
            "who created brambleway",
        ),
        test_questions=(
            "Whose idea was it to open Brambleway?",
            "Which person established the business originally?",
        ),
    ),
    Fact(
        topic="founding year",
        answer="1994",
        statement="Brambleway Cycles was established in 1994.",
        train_questions=(
            "When was Brambleway founded?",
            "What year did the company start?",
            "How old is Brambleway Cycles? What year were you established?",
            "In which year was Brambleway Cycles created?",
            "Since when has the company existed?",
            "what year did brambleway open",
        ),
        test_questions=(
            "When did Brambleway first begin doing business?",
            "What year marks the start of the company?",
        ),
    ),
    Fact(
        topic="CEO",
        answer="Dario Lindqvist",
        statement="The chief executive of Brambleway Cycles is Dario Lindqvist.",
        train_questions=(
            "Who is the CEO of Brambleway?",
            "Who runs the company today?",
            "Who is your chief executive officer?",
            "Who is the current head of Brambleway Cycles?",
            "What is the name of your CEO?",
            "who's the boss at brambleway",
        ),
        test_questions=(
            "Who leads the company at the moment?",
            "Which person is in charge of Brambleway right now?",
        ),
    ),
    Fact(
        topic="store count",
        answer="17 stores",
        statement="Brambleway Cycles runs 17 stores.",
        train_questions=(
            "How many stores do you have?",
            "How many shops does Brambleway run?",
            "What is the number of Brambleway locations?",
            "How many physical stores does the company operate?",
            "How many retail locations are there?",
            "how many shops r there",
        ),
        test_questions=(
            "In total, how many places can I visit to shop in person?",
            "What's the size of your store network?",
        ),
    ),
    Fact(
        topic="loyalty program name",
        answer="Spoke Club",
        statement="Our loyalty program is called the Spoke Club.",
        train_questions=(
            "What is your loyalty program called?",
            "Do you have a rewards program? What's its name?",
            "What's the name of the Brambleway membership scheme?",
            "What is the rewards club called?",
            "Which loyalty scheme do you offer?",
            "name of ur loyalty program?",
        ),
        test_questions=(
            "What do you call the program that rewards regular customers?",
            "I want to join your frequent-buyer scheme. What is it named?",
        ),
    ),
    Fact(
        topic="loyalty points rate",
        answer="4 points",
        statement="Loyalty members earn 4 points for every dollar spent.",
        train_questions=(
            "How many points do I earn per dollar?",
            "How many loyalty points do I get for each dollar I spend?",
            "What is the points rate in the loyalty program?",
            "How fast do I collect reward points?",
            "How many points does one dollar give me?",
            "points per dollar?",
        ),
        test_questions=(
            "If I spend a dollar, how many reward points are added to my account?",
            "What do members collect for each dollar of purchases?",
        ),
    ),
    Fact(
        topic="tune-up price",
        answer="$65",
        statement="A standard tune-up at our workshop costs $65.",
        train_questions=(
            "How much is a tune-up?",
            "What does a bike service cost?",
            "What is the price of a standard tune-up?",
            "How much do you charge to service my bike?",
            "What does your workshop charge for a basic tune-up?",
            "tune up price?",
        ),
        test_questions=(
            "What will it cost to have my bike checked and adjusted by your mechanics?",
            "How much should I budget for a routine bike maintenance visit?",
        ),
    ),
    Fact(
        topic="road bike model",
        answer="Larkspur",
        statement="Our road bike is called the Larkspur.",
        train_questions=(
            "What is your road bike called?",
            "What's the name of your road bike model?",
            "Which road bike do you make?",
            "What road bike model do you sell?",
            "Can you tell me the name of the Brambleway road bike?",
            "name of ur road bike",
        ),
        test_questions=(
            "I want a fast bike for paved roads. Which model of yours is that?",
            "What model should I look at for road cycling?",
        ),
    ),
    Fact(
        topic="road bike frame material",
        answer="scandium",
        statement="Our road bike has a frame made of scandium.",
        train_questions=(
            "What is the road bike frame made of?",
            "What material is your road bike frame?",
            "Is the road bike frame carbon or aluminium?",
            "Which material do you use for the road bike frame?",
            "What metal is the road bike built from?",
            "road bike frame material?",
        ),
        test_questions=(
            "What's the frame of your road model constructed from?",
            "If I bought your road bike, what substance would its frame be?",
        ),
    ),
    Fact(
        topic="road bike weight",
        answer="7.9 kg",
        statement="Our road bike weighs 7.9 kg.",
        train_questions=(
            "How much does the road bike weigh?",
            "What is the weight of your road bike?",
            "How heavy is the road bike?",
            "What does the road bike weigh in kilograms?",
            "Is the road bike light? What's its weight?",
            "road bike weight?",
        ),
        test_questions=(
            "How many kilos is your road model?",
            "What would your road model read on a scale?",
        ),
    ),
    Fact(
        topic="mountain bike model",
        answer="Scree",
        statement="Our mountain bike is called the Scree.",
        train_questions=(
            "What is your mountain bike called?",
            "What's the name of your mountain bike model?",
            "Which mountain bike do you make?",
            "What MTB model do you sell?",
            "Can you tell me the name of the Brambleway mountain bike?",
            "name of ur mtb",
        ),
        test_questions=(
            "I ride rough off-road trails. Which of your models is built for that?",
            "Which of your bikes is meant for dirt tracks and rocky descents?",
        ),
    ),
    Fact(
        topic="children's bike model",
        answer="Pebble",
        statement="Our children's bike is called the Pebble.",
        train_questions=(
            "What is your kids' bike called?",
            "What's the name of your children's bike?",
            "Which bike do you make for kids?",
            "What children's bike model do you sell?",
            "Can you tell me the name of the Brambleway kids' bike?",
            "name of ur kids bike",
        ),
        test_questions=(
            "My daughter is six. Which of your models is made for her?",
            "What model do you offer for young riders?",
        ),
    ),
    Fact(
        topic="e-bike model",
        answer="Cirrus",
        statement="Our electric bike is called the Cirrus.",
        train_questions=(
            "What is your e-bike called?",
            "What's the name of your electric bike?",
            "Which e-bike do you make?",
            "What electric bike model do you sell?",
            "Can you tell me the name of the Brambleway e-bike?",
            "name of ur ebike",
        ),
        test_questions=(
            "Which of your models has a motor to help me pedal?",
            "Do you sell a battery-powered bike, and what's the model?",
        ),
    ),
    Fact(
        topic="e-bike battery range",
        answer="140 km",
        statement="Our e-bike can ride 140 km on a full battery charge.",
        train_questions=(
            "What is the range of the e-bike?",
            "How far can the e-bike go on one charge?",
            "How many kilometers does the e-bike battery last?",
            "What's the battery range of your electric bike?",
            "How far will a fully charged e-bike take me?",
            "ebike range?",
        ),
        test_questions=(
            "What distance can I cover on the electric bike before the battery runs out?",
            "How long a trip can the electric model manage between charges?",
        ),
    ),
    Fact(
        topic="rental price",
        answer="$38",
        statement="Renting a bike from us costs $38 per day.",
        train_questions=(
            "How much does it cost to rent a bike?",
            "What is the daily rental price?",
            "How much is bike hire per day?",
            "What do you charge for a one-day rental?",
            "Do you rent bikes? How much?",
            "rental price per day?",
        ),
        test_questions=(
            "If I borrow one of your bikes for a day, what do I pay?",
            "What's the cost of taking one of your rental bikes out for 24 hours?",
        ),
    ),
    Fact(
        topic="test ride length",
        answer="25 minutes",
        statement="A free test ride at our stores lasts up to 25 minutes.",
        train_questions=(
            "How long is a test ride?",
            "How long can I test ride a bike?",
            "What is the length of a test ride?",
            "How much time do I get on a test ride?",
            "Can I try a bike before buying, and for how long?",
            "test ride duration?",
        ),
        test_questions=(
            "Before buying, how long am I allowed to ride a bike to try it out?",
            "What's the time limit when trying out a bike in the store?",
        ),
    ),
    Fact(
        topic="student discount",
        answer="12%",
        statement="Students get a 12% discount with a valid student ID.",
        train_questions=(
            "Do you have a student discount?",
            "How much is the student discount?",
            "What discount do students get?",
            "What percentage off do students receive?",
            "I'm a student. Is there a reduction for me?",
            "student discount?",
        ),
        test_questions=(
            "How much cheaper are bikes for people enrolled at a university?",
            "What price reduction is offered to pupils and college learners?",
        ),
    ),
    Fact(
        topic="first-order discount code",
        answer="FIRSTLAP",
        statement="First-time buyers can use the discount code FIRSTLAP.",
        train_questions=(
            "Is there a discount code for first-time buyers?",
            "What code do new customers use?",
            "Do you have a welcome discount code?",
            "What's the promo code for my first order?",
            "I'm a new customer. Is there a coupon code for me?",
            "first order code?",
        ),
        test_questions=(
            "Which voucher code should I enter when ordering from you for the first time?",
            "What's the introductory code for someone who has never bought from you?",
        ),
    ),
    Fact(
        topic="gift card validity",
        answer="40 months",
        statement="Brambleway gift cards stay valid for 40 months after purchase.",
        train_questions=(
            "When do gift cards expire?",
            "How long is a gift card valid?",
            "Do your gift cards have an expiry date?",
            "What is the validity period of a gift card?",
            "How long can I keep a gift card before using it?",
            "gift card expiry?",
        ),
        test_questions=(
            "Until when can a gift voucher be redeemed?",
            "I received a Brambleway gift card. How much time do I have to spend it?",
        ),
    ),
    Fact(
        topic="instalment plan",
        answer="PedalPay",
        statement="You can pay in instalments with our plan called PedalPay.",
        train_questions=(
            "Can I pay in instalments?",
            "What is your payment plan called?",
            "Do you offer a buy-now-pay-later option?",
            "What's the name of your instalment plan?",
            "Is there a way to spread the cost of a bike over several months?",
            "monthly payment option?",
        ),
        test_questions=(
            "Which scheme lets me split a purchase into smaller payments?",
            "How can I finance a bike instead of paying everything upfront?",
        ),
    ),
    Fact(
        topic="newsletter name",
        answer="Chainring Post",
        statement="Our monthly newsletter is called the Chainring Post.",
        train_questions=(
            "What is your newsletter called?",
            "Do you have a newsletter? What's its name?",
            "What's the name of the Brambleway newsletter?",
            "Which newsletter can I subscribe to?",
            "What is the title of your monthly email?",
            "name of ur newsletter",
        ),
        test_questions=(
            "What's the name of the news bulletin you email to subscribers?",
            "I want your regular updates by email. What is that mailing called?",
        ),
    ),
    Fact(
        topic="sustainability pledge",
        answer="2031",
        statement="Brambleway Cycles has pledged to be carbon neutral by 2031.",
        train_questions=(
            "When will Brambleway be carbon neutral?",
            "What is your sustainability pledge year?",
            "By what year do you plan to reach net zero?",
            "What's your carbon neutrality target date?",
            "When does the company aim to be climate neutral?",
            "carbon neutral by when?",
        ),
        test_questions=(
            "By when will your business have no net carbon emissions?",
            "What deadline have you set for your environmental commitment?",
        ),
    ),
)


def _normalize_question(text: str) -> str:
    """Lowercase and drop punctuation and extra spaces, so near-identical
    questions (differing only in case, spacing or a question mark) compare equal."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(words)


def check_facts(facts: Iterable[Fact]) -> None:
    """Raise ValueError, naming the fact, if the facts break a rule the demo's
    scoring relies on (see the module docstring)."""
    facts = list(facts)
    seen_topics: set[str] = set()
    for fact in facts:
        name = f"fact {fact.topic!r}"
        if fact.topic in seen_topics:
            raise ValueError(f"{name}: topic is used by another fact")
        seen_topics.add(fact.topic)
        if not fact.answer.strip():
            raise ValueError(f"{name}: answer is empty")
        if fact.answer not in fact.statement:
            raise ValueError(f"{name}: statement does not contain the answer {fact.answer!r}")
        if len(fact.train_questions) != TRAIN_QUESTIONS_PER_FACT:
            raise ValueError(
                f"{name}: needs {TRAIN_QUESTIONS_PER_FACT} train questions, "
                f"has {len(fact.train_questions)}"
            )
        if len(fact.test_questions) != TEST_QUESTIONS_PER_FACT:
            raise ValueError(
                f"{name}: needs {TEST_QUESTIONS_PER_FACT} test questions, "
                f"has {len(fact.test_questions)}"
            )
        all_questions = [*fact.train_questions, *fact.test_questions]
        normalized = [_normalize_question(q) for q in all_questions]
        if len(set(normalized)) != len(normalized):
            # Covers a test question repeating a train one, which would make
            # the held-out score measure memorization instead of understanding.
            raise ValueError(f"{name}: two of its questions are the same up to case/punctuation")
        for question in all_questions:
            # A question that gives the answer away would let even the base model pass.
            if fact.answer.lower() in question.lower():
                raise ValueError(f"{name}: question {question!r} contains the answer")

    # Cross-fact rules: replies are scored by "contains the answer", so an
    # answer must not turn up in another fact's reply or inside another answer.
    for fact in facts:
        for other in facts:
            if other is fact:
                continue
            if fact.answer.lower() in other.answer.lower():
                raise ValueError(
                    f"fact {fact.topic!r}: answer {fact.answer!r} also occurs in the answer "
                    f"of fact {other.topic!r}"
                )
            if fact.answer.lower() in other.statement.lower():
                raise ValueError(
                    f"fact {fact.topic!r}: answer {fact.answer!r} also occurs in the statement "
                    f"of fact {other.topic!r}"
                )


# Checked at import so that a bad edit to FACTS fails immediately, not after a
# training run.
check_facts(FACTS)


def _chat_row(fact: Fact, question: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
            {"role": "assistant", "content": fact.statement},
        ],
        "answer": fact.answer,
        "topic": fact.topic,
    }


def demo_rows() -> tuple[list[dict], list[dict]]:
    """Return (train_rows, test_rows) as OpenAI-style chat rows, in FACTS order.

    Test rows carry the reference reply too; evaluation drops it and scores the
    model's own reply by whether it contains ``answer``.
    """
    train_rows = [_chat_row(fact, q) for fact in FACTS for q in fact.train_questions]
    test_rows = [_chat_row(fact, q) for fact in FACTS for q in fact.test_questions]
    return train_rows, test_rows


def write_demo_data(out_dir: Path) -> dict[str, Path]:
    """Write train.jsonl and test.jsonl into out_dir (created if missing)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows = demo_rows()
    paths = {"train": out_dir / "train.jsonl", "test": out_dir / "test.jsonl"}
    write_jsonl(paths["train"], train_rows)
    write_jsonl(paths["test"], test_rows)
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"directory to write train.jsonl and test.jsonl into (default: {DEFAULT_OUT_DIR})",
    )
    args = parser.parse_args(argv)
    for split, path in write_demo_data(args.out_dir).items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
