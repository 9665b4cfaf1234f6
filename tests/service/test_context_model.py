"""The shipped model reads each message after the turns before it (en, ar, fr).

A disclosure, a generic assistant reply, then a late "me too" that is sensitive only through
context, and an unrelated request: the "me too" is flagged, the reply and the request are not,
and /v1/screen blocks a signal drawn from the "me too". Written for these tests; none of these
sentences is in the training data.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

CASES = {
    "en": (
        "I was diagnosed with type 2 diabetes in March.",
        "Thanks for telling me. What can I help you with today?",
        "yeah my husband has it too lol, any good planner app?",
        "Recommend a lightweight tent for two people",
    ),
    "fr": (
        "On m'a diagnostiqué un diabète de type 2 en mars.",
        "Merci de me le dire. En quoi puis-je vous aider aujourd'hui ?",
        "ouais mon mari l'a aussi mdr, une bonne appli d'agenda ?",
        "Conseille-moi une tente légère pour deux personnes",
    ),
    "ar": (
        "عندي سكري من النوع الثاني من شهر مارس",
        "شكراً لأنك أخبرتني. كيف أقدر أساعدك اليوم؟",
        "وزوجي كمان عنده نفس الشي، تعرف تطبيق حلو لتنظيم المواعيد؟",
        "اقترح علي خيمة خفيفة لشخصين",
    ),
}


# A "me too" that says nothing about health on its own words: only the turns before it make it
# the user's own diabetes. (The cases above name the condition's return, "has it too", which
# e5-multi 1.5.0 to 1.7.0 flag even alone: 0.91-1.00 in en, fr and ar.) Written for these tests.
BARE_ME_TOO = {
    "en": "yeah me too. any good planner app?",
    "fr": "moi aussi lol, une bonne appli d'agenda ?",
    "ar": "وأنا كمان، تعرف تطبيق حلو لتنظيم المواعيد؟",
}
# e5-multi 1.7.0 scores each of them 1.00 after the disclosure and the reply, and 0.02 (en),
# 0.16 (fr) and 0.44 (ar) alone against a health threshold of 0.75 (1.6.0 flagged the French
# and Arabic ones alone, 0.74 and 0.95, their planner for "appointments" read as medical).


@pytest.fixture()
def turns_client(client: TestClient) -> TestClient:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    if not engine.context_turns:
        pytest.skip("the served model reads only the tail of the previous message")
    return client


def transcript(lang: str, last: int) -> list[dict[str, str]]:
    disclosure, reply, me_too, unrelated = CASES[lang]
    turns = [
        {"role": "user", "content": disclosure},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": me_too},
    ]
    if last == 3:
        turns[2] = {"role": "user", "content": unrelated}
    return turns


@pytest.mark.parametrize("lang", sorted(CASES))
def test_a_late_me_too_is_flagged_and_the_reply_is_not(turns_client: TestClient, lang: str) -> None:
    r = turns_client.post("/v1/classify", json={"messages": transcript(lang, 2)})
    assert r.status_code == 200
    msgs = r.json()["messages"]
    assert msgs[0]["flags"]["health"], msgs[0]["scores"]
    assert not msgs[1]["sensitive"], ("generic reply", msgs[1]["scores"])
    assert msgs[2]["flags"]["health"], ("late me too", msgs[2]["scores"])


@pytest.mark.parametrize("lang", sorted(BARE_ME_TOO))
def test_a_bare_me_too_is_flagged_only_through_the_turns_before_it(
    turns_client: TestClient, lang: str
) -> None:
    disclosure, reply, _, _ = CASES[lang]
    turns = [
        {"role": "user", "content": disclosure},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": BARE_ME_TOO[lang]},
    ]
    after = turns_client.post("/v1/classify", json={"messages": turns}).json()["messages"]
    alone = turns_client.post("/v1/classify", json={"messages": turns[2:]}).json()["messages"]
    assert not alone[0]["sensitive"], ("alone", alone[0]["scores"])
    assert after[2]["flags"]["health"], ("after the disclosure", after[2]["scores"])


@pytest.mark.parametrize("lang", sorted(CASES))
def test_an_unrelated_request_after_it_is_not(turns_client: TestClient, lang: str) -> None:
    r = turns_client.post("/v1/classify", json={"messages": transcript(lang, 3)})
    msgs = r.json()["messages"]
    assert not msgs[1]["sensitive"], ("generic reply", msgs[1]["scores"])
    assert not msgs[2]["sensitive"], ("unrelated request", msgs[2]["scores"])


@pytest.mark.parametrize("lang", sorted(CASES))
def test_a_signal_from_the_late_me_too_is_blocked(turns_client: TestClient, lang: str) -> None:
    body = {
        "messages": transcript(lang, 2),
        "signals": [{"id": "apps", "text": "planner apps", "source_messages": [2]}],
        "region": "US",
    }
    decision = turns_client.post("/v1/screen", json=body).json()["decisions"][0]
    assert decision["decision"] == "blocked"
    assert any(
        x["type"] == "source" and x["label"] == "health" and x["message_index"] == 2
        for x in decision["reasons"]
    ), decision
