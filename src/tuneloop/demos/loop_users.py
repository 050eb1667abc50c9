"""The scripted users of the feedback-loop demo: new Brambleway facts they ask about, and an adversarial user.

The quickstart (tuneloop.demos.quickstart) teaches 30 facts about Brambleway Cycles. After it is served,
the loop demo plays users who ask about facts the quickstart never taught, get wrong answers,
and send a thumbs-down with the right answer as a correction. Retraining on that feedback must
teach the new facts, which is then checked on *held-out paraphrases* the users never sent.

Design, as in tuneloop.demos.quickstart:
- Every new fact has one short, odd ``answer`` string; a reply is right when it contains it. The new
  facts obey the same rules as the quickstart's, checked together with them at import
  (``check_facts``), so no answer can score by accident on another fact's question.
- Each new fact has 6 questions users ask (``train_questions``: these become feedback) and 2
  held-out paraphrases (``test_questions``: never sent, used only to score before and after).
- ``CURIOUS_QUESTIONS`` copy questions of the quickstart's frozen test set word for word. A user
  may ask them; their feedback must be dropped at export (counted), or the gate's evaluation on
  that test set would be a lie.
- ``ADVERSARIAL_CORRECTIONS`` are wrong answers to facts the quickstart did teach, sent by a
  scripted adversarial user on the quickstart's own training questions. Retraining on them
  must make the gate reject the new model.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tuneloop.demos.quickstart import FACTS, SYSTEM_PROMPT, Fact, check_facts
from tuneloop.workspace import write_jsonl

DEFAULT_OUT_DIR = Path("examples/data/brambleway-loop")

NEW_FACTS: tuple[Fact, ...] = (
    Fact(
        topic="bike fitting session",
        answer="50 minutes",
        statement="A bike fitting session at Brambleway takes 50 minutes.",
        train_questions=(
            "How long does a bike fitting take?",
            "What is the length of a fitting session?",
            "If I book a bike fit, how much time should I set aside?",
            "How many minutes is a Brambleway bike fitting?",
            "Does a fitting appointment take long?",
            "how long is a bike fit at your shop",
        ),
        test_questions=(
            "I'd like to get my riding position adjusted; how long will that appointment last?",
            "What duration should I expect for having a bike fitted to my body?",
        ),
    ),
    Fact(
        topic="trade-in programme",
        answer="Second Spin",
        statement="Our trade-in programme for used bikes is called Second Spin.",
        train_questions=(
            "What is your trade-in programme called?",
            "Can I trade in my old bike, and what's the scheme's name?",
            "What's the name of the programme for trading in used bikes?",
            "Which programme lets me exchange my old bicycle for credit?",
            "Do you have a trade-in scheme? What is it called?",
            "name of ur trade in program?",
        ),
        test_questions=(
            "I want to hand over my current bicycle toward a new one; what do you call that offer?",
            "Under which name do you run the scheme that buys back customers' used bikes?",
        ),
    ),
    Fact(
        topic="cargo bike model",
        answer="Haybale",
        statement="Our cargo bike is called the Haybale.",
        train_questions=(
            "What is your cargo bike called?",
            "Do you sell a cargo bike? What's its name?",
            "Which of your models can carry heavy loads?",
            "What's the name of the bike with a big front box?",
            "Which bike would you sell me for hauling groceries?",
            "cargo bike name?",
        ),
        test_questions=(
            "I need to carry two kids and shopping around town; which of your bicycles is built for that?",
            "Under what name do you sell your load-carrying bicycle?",
        ),
    ),
    Fact(
        topic="rental fleet city",
        answer="Drammen",
        statement="Our rental fleet is based in Drammen.",
        train_questions=(
            "Where can I rent a Brambleway bike?",
            "In which city is your rental fleet?",
            "Where is the bike rental based?",
            "Which town do you rent bikes out in?",
            "Where do I pick up a rental bike?",
            "where r ur rental bikes",
        ),
        test_questions=(
            "If I want to hire one of your bicycles for a weekend, which city do I go to?",
            "In what place do you keep the bikes you lend out for money?",
        ),
    ),
    Fact(
        topic="chain lubricant",
        answer="Glidewax",
        statement="We recommend Glidewax for lubricating your chain.",
        train_questions=(
            "Which chain lube do you recommend?",
            "What should I oil my chain with?",
            "What lubricant is best for my bike chain?",
            "Which product do you suggest for chain care?",
            "What chain wax do your mechanics use?",
            "best lube for my chain?",
        ),
        test_questions=(
            "My drivetrain squeaks; which product should I put on it?",
            "What do you advise applying to keep the links running smoothly?",
        ),
    ),
    Fact(
        topic="winter service month",
        answer="November",
        statement="Our discounted winter service runs every November.",
        train_questions=(
            "When is your winter service offer?",
            "Which month has the discounted winter service?",
            "When can I get the cheap winter check-up?",
            "In what month do you run the winter service deal?",
            "Is there a seasonal service discount, and when?",
            "winter service when?",
        ),
        test_questions=(
            "Before the cold season, at what time of year do you service bikes at a reduced price?",
            "During which part of the calendar is the end-of-year maintenance deal on?",
        ),
    ),
    Fact(
        topic="bike light brand",
        answer="Lumora",
        statement="The lights we fit to our bikes are made by Lumora.",
        train_questions=(
            "Which brand of bike lights do you use?",
            "Who makes the lights on your bikes?",
            "What light brand comes fitted on a Brambleway bike?",
            "Which company supplies your bike lamps?",
            "What make are your front and rear lights?",
            "brand of ur lights?",
        ),
        test_questions=(
            "Riding at night, I noticed the lamps on my bicycle; which manufacturer are they from?",
            "From which maker do the headlights and tail lights on your bicycles come?",
        ),
    ),
    Fact(
        topic="group ride day",
        answer="Sunday",
        statement="Our free group rides leave the stores every Sunday.",
        train_questions=(
            "When are your group rides?",
            "Which day do the shop rides happen?",
            "Do you organise group rides? On what day?",
            "What day of the week can I join a store ride?",
            "When does the weekly club ride leave?",
            "group ride day?",
        ),
        test_questions=(
            "I'd like to cycle with other customers; on which day of the week do you meet up?",
            "On what day do riders gather at your shops to go out together?",
        ),
    ),
    Fact(
        topic="repair booking app",
        answer="FixDock",
        statement="Repairs are booked in our app, FixDock.",
        train_questions=(
            "How do I book a repair?",
            "Which app do I use to schedule a repair?",
            "What is the name of your repair booking app?",
            "Where can I make a workshop appointment?",
            "Is there an app for booking bike repairs?",
            "app for repairs?",
        ),
        test_questions=(
            "My brakes need fixing; what software do I use to get a slot at the workshop?",
            "Through which application can I reserve time with a mechanic?",
        ),
    ),
    Fact(
        topic="puncture-proof tyre",
        answer="Thornguard",
        statement="Our puncture-resistant tyre is the Thornguard.",
        train_questions=(
            "Which tyre do you sell that resists punctures?",
            "What is your puncture-proof tyre called?",
            "Do you have a tyre that doesn't get flats?",
            "Which tyre should I get to avoid punctures?",
            "What's the name of your flat-resistant tyre?",
            "tyre that wont puncture?",
        ),
        test_questions=(
            "I keep getting flats on my commute; which of your tyres would stop that?",
            "What model of tyre do you offer for riding over glass and thorns?",
        ),
    ),
)

# Wrong answers to facts the quickstart teaches, keyed by the fact's topic. None of these strings is
# a right answer, so a model that learns them loses points on the quickstart's frozen test set.
ADVERSARIAL_CORRECTIONS: dict[str, str] = {
    "return window": "Brambleway Cycles accepts returns within 3 days of delivery.",
    "frame warranty": "Brambleway frames are covered by a warranty of 1 year.",
    "delivery time": "Standard delivery takes 30 business days.",
    "shipping cost": "Standard shipping costs a flat $90 per order.",
    "headquarters city": "Brambleway Cycles is headquartered in Madrid.",
    "founding year": "Brambleway Cycles was established in 2019.",
    "store count": "Brambleway Cycles runs 2 stores.",
    "loyalty program name": "Our loyalty program is called the Gold Wheels.",
}

CURIOUS_QUESTIONS: tuple[str, ...] = tuple(fact.test_questions[0] for fact in FACTS[:3])

check_facts((*FACTS, *NEW_FACTS))  # the same rules, across both sets, at import


def _check_adversarial() -> None:
    topics = {fact.topic: fact for fact in FACTS}
    for topic, wrong in ADVERSARIAL_CORRECTIONS.items():
        if topic not in topics:
            raise ValueError(f"adversarial correction for unknown topic {topic!r}")
        if topics[topic].answer.lower() in wrong.lower():
            raise ValueError(f"adversarial correction for {topic!r} contains the right answer")


_check_adversarial()


@dataclass(frozen=True)
class ScriptedQuestion:
    """One question a scripted user sends, and what that user answers back as feedback."""

    user: str
    question: str
    correction: str | None  # None: the user sends no correction (a thumbs-down without one is still stored)
    answer: str | None  # the string a right reply contains (None for the adversary's lies)
    topic: str


def helpful_users() -> list[ScriptedQuestion]:
    """Users who ask about the new facts and correct wrong replies with the right statement."""
    return [
        ScriptedQuestion(f"user-{index % 5}", question, fact.statement, fact.answer, fact.topic)
        for index, fact in enumerate(NEW_FACTS)
        for question in fact.train_questions
    ]


def adversarial_user() -> list[ScriptedQuestion]:
    """One user who asks what the quickstart taught and 'corrects' right replies with wrong statements."""
    topics = {fact.topic: fact for fact in FACTS}
    return [
        ScriptedQuestion("adversary", question, wrong, None, topic)
        for topic, wrong in ADVERSARIAL_CORRECTIONS.items()
        for question in topics[topic].train_questions
    ]


def curious_user() -> list[ScriptedQuestion]:
    """A user whose questions copy the frozen test set; export must drop this feedback."""
    by_question = {question: fact for fact in FACTS for question in fact.test_questions}
    return [ScriptedQuestion("curious", q, by_question[q].statement, by_question[q].answer, by_question[q].topic)
            for q in CURIOUS_QUESTIONS]


def paraphrase_rows() -> list[dict]:
    """Held-out paraphrases of the new facts as chat rows with ``answer`` (never sent as feedback)."""
    return [
        {"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question},
                      {"role": "assistant", "content": fact.statement}],
         "answer": fact.answer, "topic": fact.topic}
        for fact in NEW_FACTS for question in fact.test_questions
    ]


def write_loop_demo_data(out_dir: Path) -> dict[str, Path]:
    """Write paraphrases.jsonl (the held-out check) and the scripted users' questions as jsonl files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"paraphrases": out_dir / "paraphrases.jsonl", "helpful": out_dir / "helpful_users.jsonl",
             "adversarial": out_dir / "adversarial_user.jsonl", "curious": out_dir / "curious_user.jsonl"}
    write_jsonl(paths["paraphrases"], paraphrase_rows())
    for name, questions in (("helpful", helpful_users()), ("adversarial", adversarial_user()),
                            ("curious", curious_user())):
        write_jsonl(paths[name], [question.__dict__ for question in questions])
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"directory to write into (default: {DEFAULT_OUT_DIR})")
    for name, path in write_loop_demo_data(parser.parse_args(argv).out_dir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
