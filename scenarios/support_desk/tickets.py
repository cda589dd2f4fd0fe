"""The tickets: their categories and priorities, what customers write (wording that gives away a ticket's
category, priority and need for a senior to a careful reader, past openers and side remarks), each tick's
arrivals, and the careful reader's reading."""

from __future__ import annotations

import random
import re
import typing
from typing import Literal

from swarm.scenarios._phrasing import Grammar

CATEGORIES = ("billing", "technical", "account", "shipping")
PRIORITIES = ("low", "normal", "urgent")
Category = Literal["billing", "technical", "account", "shipping"]
Priority = Literal["low", "normal", "urgent"]
SLA = {"urgent": 4, "normal": 10, "low": 20}  # ticks from arrival to resolution
RANK = {"urgent": 0, "normal": 1, "low": 2}
PRIORITY_ODDS = {"urgent": 0.2, "normal": 0.5, "low": 0.3}
SENIOR_ODDS = 0.12  # tickets that need a senior


# -- what customers write ----------------------------------------------------------------------

CUSTOMER = Grammar({
    "open": ["Hi,", "Hello,", "Hey team,", "Good morning,", "Hi there,", "Hello support,", "Dear support,",
             "Quick one:", "Hey,", "Good afternoon,"],
    # reassurances: another topic's words that are NOT the problem; each ends in "fine, but"
    "ok_billing": ["the payment went through fine, but", "billing has been fine, but", "my invoice looks fine, but",
                   "the charge itself was fine, but", "last month's refund was fine, but"],
    "ok_technical": ["the app has no crashes and runs fine, but", "no errors, the site loads fine, but",
                     "the sync works fine, but", "uploads work fine, but"],
    "ok_account": ["logging in works fine, but", "my password works fine, but", "signing in is fine, but",
                   "the two-factor codes arrive fine, but"],
    "ok_shipping": ["the package arrived fine, but", "delivery was fine, but", "the courier was fine, but",
                    "tracking looks fine, but"],
    "billing": ["I was charged twice for order {order}.", "my card was charged {amount} after I cancelled.",
                "the {month} invoice shows {amount}, which is wrong.",
                "I still haven't got the refund for order {order}.",
                "you billed me for the {plan} but I'm on the free tier.",
                "my payment keeps failing at checkout, {feel}.",
                "there's a charge of {amount} on my statement I don't recognise.",
                "I need a receipt with our VAT number for {month}.", "the price jumped at renewal with no notice.",
                "I was overcharged {amount} on the {plan}, {feel}.", "I got billed {amount} for a seat we removed."],
    "technical": ["{app} crashes every time I open {screen}.", "I get an error 500 when I save {item}.",
                  "{app} freezes on the loading screen {when}.", "sync between {app} and the website is broken.",
                  "uploads fail halfway with a timeout, {feel}.", "the export button does nothing, looks like a bug.",
                  "{screen} shows a blank screen since {when}.", "notifications stopped working on {device}.",
                  "{app} throws an error when I attach a file.", "{screen} glitches and shows someone else's data.",
                  "{app} keeps crashing {when}, {feel}."],
    "account": ["I can't log in since I changed my password.", "I'm locked out after too many attempts {when}.",
                "the two-factor code never arrives on {device}.", "the password reset link had expired {when}.",
                "I need to change the email on my login.", "please delete my account and all my data.",
                "I can't sign in with Google anymore, {feel}.", "my username shows someone else's name.",
                "I need to make a colleague an admin on our team.",
                "the login page keeps bouncing me back to the start."],
    "shipping": ["my package hasn't arrived and order {order} was due {due}.",
                 "the tracking for order {order} hasn't moved in days.", "the parcel arrived damaged {when}.",
                 "I received the wrong item in order {order}, {feel}.", "the courier says delivered but nothing came.",
                 "I need a return label for order {order}.", "can you change the delivery address for order {order}?",
                 "order {order} has been stuck in transit for a week.",
                 "half of order {order} shipped and the rest vanished."],
    "detail": ["My order number is {order}.", "I'm on the {plan}.", "I'm using {device}.",
               "I've been with you for {years} years.", "Account number {acct}, if that helps.",
               "I already read your FAQ.", "My colleague has the same problem.", "Screenshots on request."],
    # side remarks about another topic, after the real problem
    "also_billing": ["Will I get a refund for the trouble?", "Please also send me last month's invoice.",
                     "I paid by card, if that matters."],
    "also_technical": ["I also saw an error message once last week.", "Not sure if it's a bug on your side.",
                       "The app was slow too, but that's minor."],
    "also_account": ["My login email is {email}.", "I can log in on my laptop, for what it's worth.",
                     "My password is a new one, if that matters."],
    "also_shipping": ["It's the same order I had shipped to the office.",
                      "My last parcel came quickly, so this is odd.", "Tracking emails arrive fine."],
    "urgent": ["This is urgent.", "Please fix this ASAP.", "Our whole team is blocked right now.",
               "We're losing sales every hour this goes on.", "It's an emergency: we launch tomorrow.",
               "Urgent, please!", "I need this sorted immediately.", "URGENT: our customers are waiting on us."],
    "low": ["No rush.", "Not urgent.", "It isn't urgent, just flagging it.", "Whenever you get a chance.",
            "No hurry at all.", "Just curious, really.", "Low priority for us.", "Not an emergency, take your time."],
    "normal": ["Thanks.", "Can you take a look?", "Please advise.", "Let me know what you find.", "Thanks in advance.",
               "Appreciate the help.", "What should I do?"],
    "senior": ["This is the third time I'm writing about this.", "I want to speak to a manager.",
               "If this isn't fixed I'll file a chargeback.", "Our lawyer is copied on this.",
               "I'm ready to cancel our company contract.", "Your colleague promised a callback that never came.",
               "Please log a formal complaint."],
    "sign": ["— {name}", "Thanks, {name}", "Cheers, {name}", "{name}", "Regards, {name}", "Best, {name}"],
    "when": ["this morning", "yesterday", "last week", "on Monday", "since Friday", "twice this week", "all day"],
    "due": ["on Monday", "yesterday", "last week", "three days ago", "before the weekend"],
    "feel": ["which is frustrating", "and I'm confused", "and I'm not happy", "no idea why", "which seems odd"],
    "app": ["the mobile app", "the desktop app", "the web app", "your iPad app", "the Android app"],
    "screen": ["the reports tab", "settings", "the calendar view", "my dashboard", "the inbox view"],
    "item": ["a draft", "my notes", "a new project", "the form", "a contact"],
    "device": ["my iPhone", "an Android phone", "Chrome on Windows", "Safari on a Mac", "Firefox", "my tablet"],
    "plan": ["Pro plan", "Team plan", "Basic plan", "annual plan", "Starter plan"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"],
})
FOLLOW_UP = ["That doesn't answer my question.", "Wrong team, I think: that's not my problem.",
             "I asked for someone senior, not a template.", "This didn't help at all.",
             "You answered a different question.", "Still not fixed, and I said why."]
CUSTOMER_NAMES = ("Dana", "Marco", "Priya", "Tom", "Aisha", "Lukas", "Mei", "Omar", "Sofia", "Jamal", "Hanna", "Raj",
                  "Elena", "Chris", "Yuki", "Fatima", "Pete", "Ingrid", "Diego", "Noor", "Grace", "Sven", "Amara",
                  "Rhys", "Lucia", "Kenji", "Olga", "Tariq", "Emma", "Ravi")


def write_ticket(rng: random.Random, category: str, priority: str, senior: bool) -> tuple[str, str]:
    """A customer's ticket text (and name) whose wording reveals its category, priority and need for a senior."""
    name = rng.choice(CUSTOMER_NAMES)
    slots = {"name": name, "order": f"#{rng.randint(10000, 99999)}", "amount": f"${rng.randint(9, 480)}",
             "acct": str(rng.randint(100000, 999999)), "years": str(rng.randint(2, 9)),
             "email": f"{name.lower()}@{rng.choice(['mail.com', 'example.org', 'work.io'])}"}
    others = [c for c in CATEGORIES if c != category]
    mood = f"{{{priority}}}" if priority != "normal" or rng.random() < 0.6 else ""
    first = mood and rng.random() < 0.3  # the urgency first, as some customers write it (then no greeting)
    parts = {"mood_first": mood if first else "", "open": "{open}" if not first and rng.random() < 0.5 else "",
             "pre": f"{{ok_{rng.choice(others)}}}" if rng.random() < 0.25 else "",
             "core": f"{{{category}}}",
             "post": "" if rng.random() < 0.6 else rng.choice(["{detail}", f"{{also_{rng.choice(others)}}}"]),
             "mood": "" if first else mood, "senior": "{senior}" if senior else "", "sign": "{sign}"}
    for drop in (None, "post", "pre", "open"):  # shorten a long ticket by its optional parts
        if drop:
            parts[drop] = ""
        text = _sentences(CUSTOMER.say(p, rng, **slots) for p in parts.values() if p)
        if len(text) <= 190:
            break
    return text, name


def _sentences(pieces) -> str:
    """Join expanded pieces; a piece that goes on after "Hi," or "..., but" starts in lower case."""
    out = ""
    for piece in pieces:
        if out and out[-1] in ",:" or out.endswith(" but"):
            piece = piece if re.match(r"I\b", piece) else piece[:1].lower() + piece[1:]
        out = f"{out} {piece}" if out else piece
    return out


def arrivals(seed: int, tick: int, expected: float) -> list[tuple[Category, Priority, bool, str, str]]:
    """The tick's new tickets, `expected` of them on average: (category, priority, needs a senior, text, customer)."""
    rng, count = _stream(seed, tick, expected)
    out = []
    for _ in range(count):
        category = rng.choice(CATEGORIES)
        priority = rng.choices(PRIORITIES, [PRIORITY_ODDS[p] for p in PRIORITIES])[0]
        senior = rng.random() < SENIOR_ODDS
        out.append((category, priority, senior, *write_ticket(rng, category, priority, senior)))
    return out


def arriving(seed: int, tick: int, expected: float) -> int:
    """How many new tickets `arrivals` brings at `tick` (the same draw, without writing them)."""
    return _stream(seed, tick, expected)[1]


def _stream(seed: int, tick: int, expected: float) -> tuple[random.Random, int]:
    # seeded by the tick alone: the same stream whatever the agents did, so it can be foreseen
    rng = random.Random(f"support_desk:{seed}:{tick}")
    return rng, int(expected) + (rng.random() < expected % 1)


# -- reading a ticket (what a careful triage agent does) -----------------------------------------

CUES = {
    "billing": r"charg\w*|overcharg\w*|refund\w*|invoice\w*|bill\w*|payment\w*|receipt\w*|vat|price\w*|renewal",
    "technical": r"crash\w*|error\w*|freez\w*|sync\w*|upload\w*|timeout|bug\w*|blank screen|loading|glitch\w*|"
                 r"stopped working",
    "account": r"log in|logging in|login|password\w*|locked out|two-factor|sign in|signing in|reset link|username|"
               r"delete my account|admin",
    "shipping": r"package\w*|parcel\w*|tracking|deliver\w*|courier|return label|shipped|shipping|transit|wrong item",
}
CUE_RE = {c: re.compile(rf"\b({p})\b", re.I) for c, p in CUES.items()}
LOW_RE = re.compile(r"\b(no rush|not urgent|isn't urgent|whenever|no hurry|just curious|low priority|"
                    r"not an emergency)\b", re.I)
URGENT_RE = re.compile(r"\b(urgent\w*|asap|blocked|losing sales|emergency|immediately)\b", re.I)
SENIOR_RE = re.compile(r"\b(third time|manager|chargeback|lawyer|contract|callback|formal complaint)\b", re.I)
REASSURED = re.compile(r"^.*\bfine, but\b", re.I | re.S)


class Reading(typing.NamedTuple):
    category: str
    priority: str
    senior: bool
    cue: str  # the words the category was read from
    priority_cue: str
    senior_cue: str


def read_ticket(text: str) -> Reading:
    """Category from the first problem words after any "... fine, but" opener; priority and the need for a
    senior from their telltale phrases ("not urgent" is low, not urgent)."""
    body = REASSURED.sub("", text)
    found = [(m.start(), c, m.group(0)) for c, r in CUE_RE.items() if (m := r.search(body))]
    _, category, cue = min(found) if found else (0, "technical", "")
    low, urgent, senior = LOW_RE.search(text), URGENT_RE.search(text), SENIOR_RE.search(text)
    priority, pcue = ("low", low.group(0)) if low else ("urgent", urgent.group(0)) if urgent else ("normal", "")
    return Reading(category, priority, senior is not None, cue.lower(), pcue, senior.group(0) if senior else "")

