"""One feedback-loop cycle on retrain's defaults, measured on facts no demo uses: two corrections per fact.

Issue 26's check of the retrain path. The quickstart is served (`tuneloop serve`, real HTTP, the official
`openai` client); two scripted users per fact ask about 15 Brambleway facts the quickstart never taught, each in
their own words, and correct the wrong replies with a statement of their own wording. Then one cycle of the loop
runs with its defaults (`LoopSettings` as a user would write it: run, store, server, min_feedback only) and the
served model (the candidate if the gate promoted it) is scored again on two held-out paraphrases per fact
(never sent to the server before scoring, never trained on) and on the quickstart's frozen test set.

    python benchmarks/retrain_cycle.py [--workdir runs/retrain-cycle] [--quickstart runs/quickstart]

Prints one JSON line: contains-answer on the paraphrases and on the frozen set before and after, the gain, the
drop, the gate's decision, and whether the targets (+40 on the paraphrases, at most -5 on the frozen set) were met.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

TARGET_GAIN = 40.0
TARGET_MAX_DROP = 5.0


@dataclass(frozen=True)
class CorrectedFact:
    topic: str
    answer: str
    asked: tuple[tuple[str, str], tuple[str, str]]  # (question, the user's correction) for each of two users
    held_out: tuple[str, str]  # paraphrases scored before and after, never sent as feedback


FACTS: tuple[CorrectedFact, ...] = (
    CorrectedFact("saddle brand", "Perchwell",
                  (("Which saddles do you fit on your bikes?", "We fit Perchwell saddles on all our bikes."),
                   ("what saddle brand comes on a brambleway bike", "Every Brambleway bike comes with a Perchwell "
                                                                      "saddle.")),
                  ("If I buy a bike from you, whose saddle will be on it?",
                   "Who makes the seats on the bicycles you sell?")),
    CorrectedFact("workshop apprentice scheme", "Wrenchstart",
                  (("Do you train mechanics? What's the scheme called?", "Our mechanic apprenticeship is called "
                                                                            "Wrenchstart."),
                   ("What is the name of your apprentice programme?", "The apprentice programme is Wrenchstart.")),
                  ("How is your training programme for young bike mechanics named?",
                   "I want to become a bike mechanic with you; which programme would I join?")),
    CorrectedFact("helmet fitting fee", "$9",
                  (("How much do you charge to fit a helmet?", "Fitting a helmet costs $9."),
                   ("is helmet fitting free?", "No, a helmet fitting is $9.")),
                  ("What's the price of having a helmet adjusted to my head?",
                   "Would I pay anything for a helmet fit, and how much?")),
    CorrectedFact("bike wash price", "$11",
                  (("How much is a bike wash at your store?", "A bike wash costs $11."),
                   ("what do you charge to clean my bike", "We clean a bike for $11.")),
                  ("My bike is muddy; what does a wash cost at Brambleway?",
                   "What's the fee for getting my bicycle washed?")),
    CorrectedFact("largest store city", "Trondheim",
                  (("Where is your biggest shop?", "Our largest store is in Trondheim."),
                   ("which city has the largest brambleway store", "The biggest Brambleway store is the one in "
                                                                     "Trondheim.")),
                  ("In which town can I find your flagship shop with the most floor space?",
                   "Where should I go to visit the largest of your stores?")),
    CorrectedFact("tandem model", "Twinfeather",
                  (("Do you sell a tandem? What's it called?", "Our tandem is the Twinfeather."),
                   ("name of your tandem bicycle?", "The tandem we sell is called Twinfeather.")),
                  ("What is the bicycle built for two that you make?",
                   "My partner and I want to ride one bike together; which model do you offer?")),
    CorrectedFact("repair turnaround", "3 days",
                  (("How long does a repair take?", "Most repairs are done within 3 days."),
                   ("when will my bike be back from the workshop", "The workshop returns bikes in 3 days.")),
                  ("If I leave my bicycle to be fixed, how soon can I pick it up?",
                   "What's the usual wait for a workshop repair?")),
    CorrectedFact("spare parts warehouse", "Moss",
                  (("Where do your spare parts ship from?", "Spare parts ship from our warehouse in Moss."),
                   ("where is the parts warehouse", "Our parts warehouse is in Moss.")),
                  ("From which town are replacement components sent out?",
                   "In what location do you store the spare parts you post to customers?")),
    CorrectedFact("folding bike model", "Origami Dart",
                  (("Do you have a folding bike?", "Yes, our folding bike is the Origami Dart."),
                   ("what is your foldable bicycle called", "The foldable one is called Origami Dart.")),
                  ("Which of your bikes collapses to fit on a train?",
                   "I need a compact bike that folds up; what model is it?")),
    CorrectedFact("mechanic hotline", "Wheelwise",
                  (("Is there a phone line for repair advice?", "Call Wheelwise, our mechanic hotline, for advice."),
                   ("what's the name of the hotline for mechanical questions", "Our hotline for mechanics' "
                                                                                 "advice is Wheelwise.")),
                  ("Who can I ring to ask a mechanic about a problem with my bike?",
                   "What is your telephone help service for repairs called?")),
    CorrectedFact("kids' balance bike age", "2 years",
                  (("From what age is your balance bike?", "Our balance bike suits children from 2 years."),
                   ("how old must a child be for the balance bike", "Kids can start on it at 2 years.")),
                  ("What is the youngest age for the little bike without pedals?",
                   "My toddler wants a balance bike; at what age can they begin?")),
    CorrectedFact("tyre pressure check", "free of charge",
                  (("Do you charge for checking tyre pressure?", "Tyre pressure checks are free of charge."),
                   ("what does a tyre pressure check cost", "We check tyre pressure free of charge.")),
                  ("Will you pump up and check my tyres, and what does it cost me?",
                   "Is there a fee to have my tyre pressure looked at?")),
    CorrectedFact("annual members' ride", "Fjord Loop",
                  (("What is your yearly members' ride called?", "The annual members' ride is the Fjord Loop."),
                   ("name of the big club ride each year", "Each year the club rides the Fjord Loop.")),
                  ("Which event do your club members ride together once a year?",
                   "What do you call the ride you organise for members every year?")),
    CorrectedFact("bike insurance partner", "Velosure",
                  (("Who insures bikes bought from you?", "Bikes bought from us are insured by Velosure."),
                   ("which insurance company do you work with", "We partner with Velosure for bike insurance.")),
                  ("If I want theft cover for my new bicycle, which insurer do you recommend?",
                   "What is the name of the company that provides your cycle insurance?")),
    CorrectedFact("chain replacement interval", "3,000 km",
                  (("How often should I replace my chain?", "Replace the chain every 3,000 km."),
                   ("when does a bike chain need changing", "A chain should be changed after 3,000 km.")),
                  ("After what distance do you advise fitting a new chain?",
                   "How many kilometres can I ride before my chain is worn out?")),
)


def check_facts(facts) -> None:
    """The contains-answer score relies on these: an answer occurs in no other fact's text, no question gives it
    away, none clashes with what the quickstart or the loop demo teach."""
    from tuneloop.demos.loop_users import NEW_FACTS
    from tuneloop.demos.quickstart import FACTS as QUICKSTART_FACTS

    taught = [(fact.answer, fact.statement) for fact in (*QUICKSTART_FACTS, *NEW_FACTS)]
    for fact in facts:
        questions = [question for question, _ in fact.asked] + list(fact.held_out)
        if any(fact.answer.lower() in question.lower() for question in questions):
            raise ValueError(f"{fact.topic}: a question contains the answer")
        if any(fact.answer not in correction for _, correction in fact.asked):
            raise ValueError(f"{fact.topic}: a correction lacks the answer")
        for other in facts:
            if other is not fact and fact.answer.lower() in " ".join(c for _, c in other.asked).lower():
                raise ValueError(f"{fact.topic}: its answer occurs in {other.topic}'s corrections")
        for answer, statement in taught:
            if fact.answer.lower() in statement.lower() or answer.lower() in fact.answer.lower():
                raise ValueError(f"{fact.topic}: clashes with a taught fact ({answer})")


def main(argv: list[str] | None = None) -> int:
    import openai

    from tuneloop.demos.quickstart import SYSTEM_PROMPT
    from tuneloop.feedback.demo import MODEL_ID, ask, ensure_quickstart, score_sets, send_feedback, start_server
    from tuneloop.feedback.loop import LoopSettings, run_cycle
    from tuneloop.workspace import RunDir, read_jsonl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/retrain-cycle"))
    parser.add_argument("--quickstart", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--set", action="append", default=[], help="a retrain override (default: none)")
    args = parser.parse_args(argv)
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    check_facts(FACTS)

    ensure_quickstart(args.quickstart, say)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    store = args.workdir / "serve.db"
    # Chat rows as feedback.demo.score_sets reads them: the question second to last, the answer beside it.
    held_out = [{"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": ""}],
                 "answer": fact.answer} for fact in FACTS for question in fact.held_out]
    frozen = [row for row in read_jsonl(RunDir(args.quickstart).split("test")) if row.get("answer")]

    server, url = start_server(args.quickstart, store, args.workdir / "serve.log")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed-on-loopback", timeout=600)

        say(f"retrain cycle: scoring the served quickstart on {len(held_out)} held-out paraphrases and "
            f"{len(frozen)} frozen rows")
        before = score_sets(client, held_out, frozen, SYSTEM_PROMPT)
        asked = [(f"user-{slot}", fact, question, correction)
                 for fact in FACTS for slot, (question, correction) in enumerate(fact.asked)]
        replies = ask(client, [(user, question) for user, _, question, _ in asked], SYSTEM_PROMPT)
        counts = {"up": 0, "down": 0}
        for (user, fact, _, correction), (response_id, reply) in zip(asked, replies, strict=True):
            right = fact.answer.lower() in reply.lower()
            send_feedback(url, response_id, user, "up" if right else "down", None if right else correction)
            counts["up" if right else "down"] += 1
        say(f"retrain cycle: {len(asked)} questions asked, {counts['down']} corrected; one loop cycle on defaults")
        settings = LoopSettings(run=str(args.quickstart), store=str(store), server=url, model=MODEL_ID,
                                min_feedback=1, set=args.set, out=str(args.workdir / "loop"))
        state = {"first": str(args.quickstart), "served": str(args.quickstart), "since": None, "cycles": []}
        cycle = run_cycle(settings, state, say)
        after = score_sets(client, held_out, frozen, SYSTEM_PROMPT)
    finally:
        server.terminate()
        server.wait(timeout=60)

    result = {
        "facts": len(FACTS), "corrections_per_fact": 2, "feedback": counts, "overrides": args.set,
        "before": before, "after": after,
        "gain_on_paraphrases": after["paraphrases"] - before["paraphrases"],
        "change_on_frozen_test": after["frozen_test"] - before["frozen_test"],
        "decision": cycle.get("decision"), "promoted": cycle.get("promoted"), "reasons": cycle.get("reasons"),
        "targets": {"gain_on_paraphrases": TARGET_GAIN, "max_drop_on_frozen_test": TARGET_MAX_DROP},
    }
    result["met"] = (result["gain_on_paraphrases"] >= TARGET_GAIN
                     and result["change_on_frozen_test"] >= -TARGET_MAX_DROP)
    (args.workdir / "retrain_cycle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
