"""Support desk: customer tickets are triaged into specialist queues, answered, escalated and resolved.

What happens: customers write in at a steady rate (in proportion to the size of the team). Every ticket
has a hidden category (billing, technical, account, shipping), priority (low, normal, urgent) and a hidden
need for a senior, and its wording gives all three away to a careful reader: past the greeting, past
openers such as "the payment went through fine, but ...", and past side remarks about other topics.
Triage agents route each ticket to a queue with a priority and a short note. The desk hands queued
tickets, most urgent first, to free specialists of that queue (one ticket each at a time). A specialist
answers it (which resolves it), sends a misrouted ticket on to the right queue, or escalates it to a
senior when the customer needs one (a repeat contact, a legal threat, a request for a manager); seniors
resolve escalations. An answer from the wrong desk, or a plain answer where a senior was needed, gets the
ticket reopened and sent back to its triage agent. Every ticket has an SLA by its true priority.

Actions: Route(ticket, queue, priority, note), Answer(ticket, text), Escalate(ticket, reason) and Wait.
Each agent is offered only what fits its role and what it holds this tick, with the ticket field narrowed
to the one ticket in its hands: triage agents work their inbox one ticket at a time, oldest first (as a
ticket queue hands them out), and Route that one; specialists Answer, Escalate or Route the ticket they
hold; seniors Answer theirs. The ticket in an agent's hands closes its prompt (`sim.focus`), and it hears
of it again each tick until it is dealt with.

Metrics: routing_accuracy and priority_accuracy (of every Route), mean_ticks_to_resolution, sla_breaches
(urgent 4 ticks, normal 10, low 20), resolved, open, tickets, escalated, reopened.

    swarm run support_desk --model scripted --ticks 40 --seed 1 --headless --json
    swarm run support_desk --model random --ticks 40 --agents 20 --headless
    swarm run support_desk --model scripted --agents 1000 --ticks 3 --headless

    sim = Simulation.from_scenario("support_desk", model="scripted", agents=12, rate=0.3, specialists=4)

Options: `agents` (at least 6; a quarter triage, an eighth seniors, the rest specialists spread over the four
queues), `rate` (new tickets per agent per tick), `specialists` (how many of the agents are specialists).
"""

from __future__ import annotations

import math
import random
import re
import typing
from collections import Counter
from typing import Annotated, Literal

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Give, Insight, Move, PlanUpdate, Say, Use, Wait, narrow
from swarm.scenarios._phrasing import Grammar

MAIN_METRIC = "routing_accuracy"  # the figure benchmarks/scenarios.py compares across policies
CATEGORIES = ("billing", "technical", "account", "shipping")
PRIORITIES = ("low", "normal", "urgent")
SLA = {"urgent": 4, "normal": 10, "low": 20}  # ticks from arrival to resolution
RANK = {"urgent": 0, "normal": 1, "low": 2}
PRIORITY_ODDS = {"urgent": 0.2, "normal": 0.5, "low": 0.3}
SENIOR_ODDS = 0.12  # tickets that need a senior
POD = 10  # agents per place: a place with many agents makes long prompts and floods of join events

Category = Literal["billing", "technical", "account", "shipping"]
Priority = Literal["low", "normal", "urgent"]
TicketId = Annotated[str, msgspec.Meta(min_length=1, max_length=12)]


class Route(Action, tag="route"):
    """Send a ticket to a queue, with the priority it deserves and a note for the specialist."""

    ticket: Annotated[TicketId, msgspec.Meta(description="the ticket's id")]
    # the decision, then the note that explains it: with the note first, swarm-tiny copied a wrong cue word
    # and then followed it to the wrong queue (its answers showed it); a decision is not derailed that way
    queue: Annotated[Category, msgspec.Meta(description="the desk that should handle it")]
    priority: Priority
    note: Annotated[str, msgspec.Meta(max_length=100, description="for the specialist")]


class Answer(Action, tag="answer"):
    """Reply to the customer; this resolves the ticket if it was the right desk to answer it."""

    ticket: Annotated[TicketId, msgspec.Meta(description="the ticket's id")]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=160, description="your reply")]


class Escalate(Action, tag="escalate"):
    """Hand the ticket to a senior, saying why."""

    ticket: Annotated[TicketId, msgspec.Meta(description="the ticket's id")]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=100, description="why a senior must take it")]


# -- the cast --------------------------------------------------------------------------------

FIRST_NAMES = ("Ava", "Ben", "Cleo", "Dev", "Esme", "Finn", "Gia", "Hugo", "Iris", "Jonah", "Kira", "Leo", "Mina",
               "Nico", "Orla", "Pavel", "Quinn", "Rosa", "Sami", "Tess", "Umar", "Vera", "Wes", "Xena", "Yusuf",
               "Zara", "Abel", "Bea", "Cyrus", "Dina", "Eli", "Faye", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena",
               "Milo", "Nora")
TRAITS = {
    "triage": ("quick reader, calm under load", "methodical, terse", "sceptical of long openers",
               "tidy, labels everything", "fast, rarely misreads a ticket"),
    "specialist": ("patient, explains plainly", "precise, fixes things first time", "warm, apologises once",
                   "thorough, checks the account history", "brisk and friendly"),
    "senior": ("unflappable, owns every escalation", "decisive, authorised to make exceptions",
               "calm, good with angry customers"),
}
PLACES = {"triage": ("triage desk", "new tickets land here"),
          "billing": ("billing queue", "charges, refunds, invoices"),
          "technical": ("technical queue", "crashes, errors, sync"),
          "account": ("account queue", "logins, passwords"),
          "shipping": ("shipping queue", "parcels, deliveries, returns"),
          "senior": ("escalation desk", "senior staff")}
THINGS = {"triage": ("SLA board", "urgent 4 ticks, normal 10, low 20"), "billing": ("refund policy", ""),
          "technical": ("status page", ""), "account": ("identity checklist", ""), "shipping": ("carrier portal", ""),
          "senior": ("goodwill credit budget", "")}


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


# -- what the staff write -----------------------------------------------------------------------

TRIAGE = Grammar({  # terse labels: the evidence, then the call
    "note": ["{Cat}: '{cue}'", "'{cue}' means {cat}", "Customer reports '{cue}', so {cat}", "{Cat} issue ('{cue}')",
             "Reads as {cat}: '{cue}'", "{Cat}, going by '{cue}'", "Real problem: '{cue}' ({cat})"],
    "bit_urgent": [", urgent ('{pcue}')", "; urgent: '{pcue}'", ", flagged urgent by '{pcue}'", "; '{pcue}' = urgent"],
    "bit_low": [", low ('{pcue}')", "; can wait: '{pcue}'", ", low priority per '{pcue}'", "; '{pcue}' = low"],
    "bit_normal": ["", ", normal", "; no deadline given", ", normal priority", "; no urgency stated"],
    "bit_senior": ["; wants a senior ('{scue}')", "; '{scue}', may need a senior", "; note: '{scue}'"],
    "insight": ["Most of my recent tickets are {top}; the first problem words give it away.",
                "Openers like 'works fine, but' hide the real issue; read past them.",
                "{urgent} urgent tickets lately; the deadline words are the tell.",
                "'Not urgent' is low, not urgent: read the whole phrase.",
                "Lots of {top} today; side remarks about other topics are noise.",
                "Route on the problem, not the small talk: mostly {top} lately."],
    "step_triage": ["route the oldest waiting ticket first", "read past 'fine, but' openers",
                    "mark outages, launches and blocked teams urgent", "write a note the specialist can act on",
                    "ignore side remarks about other topics", "treat 'not urgent' and 'no rush' as low"],
})

SPECIALIST = Grammar({  # warm, concrete: name the fix
    "greet": ["Hi {name}!", "Thanks, {name}.", "Hello {name}.", "Sorry about that, {name}.",
              "Thanks for the details, {name}.", "Hi {name}, thanks for writing.", "{name}, thanks for flagging this."],
    "aside": ["", "", "", "Sorry for the hassle.", "That one's on us.", "Thanks for your patience.",
              "Good catch on your side."],
    "close": ["Just reply if anything's still off.", "Let me know if that does it.", "Happy to help further.",
              "Reply here if it happens again.", "Anything else, just reply.", ""],
    # fixes, by what the ticket is about (FIXES picks the rule)
    "fix_charge": ["I've reversed the extra charge; it shows in 3-5 working days.",
                   "The duplicate charge is refunded; allow a few days.", "I've credited the charge back to your card.",
                   "I removed the wrong charge and corrected your plan."],
    "fix_refund": ["The refund went out today; expect it within a week.", "I chased the refund and it's processed now.",
                   "Your refund is approved and on its way."],
    "fix_invoice": ["A corrected invoice is in your inbox now.", "I've reissued the invoice with the right details.",
                    "The receipt with your VAT number is attached."],
    "fix_payment": ["I cleared the failed payment, so checkout works again.",
                    "A fraud check stopped your card; it's lifted now."],
    "fix_price": ["I've put your old price back for this renewal.",
                  "The renewal is back at the price you signed up for."],
    "fix_crash": ["A fix shipped this morning: update {the_app} and it stops.",
                  "Clearing the app's cache fixes it until the patch lands.",
                  "Reinstalling the latest version clears it."],
    "fix_sync": ["Our engineers patched the sync; please retry.",
                 "I've raised your upload limit, so big files go through.",
                 "The timeout was on our side and it's fixed now."],
    "fix_notify": ["I've turned notifications back on from our side.",
                   "Re-enabling notifications in settings brings them back."],
    "fix_bug": ["That was a known bug, fixed in the latest version.", "We reproduced it and shipped a fix today.",
                "I've logged the bug and applied a workaround to your workspace."],
    "fix_2fa": ["I've re-enrolled your two-factor, so new codes will arrive.",
                "Codes now go to your backup number too."],
    "fix_delete": ["Your data deletion is scheduled; we'll confirm by email.",
                   "Your account and data will be erased within a day."],
    "fix_admin": ["Your colleague now has admin rights.", "I've made your colleague an admin of the team."],
    "fix_name": ["I've corrected the name on your profile.",
                 "Your username is fixed and shows your own name again."],
    "fix_email": ["The login email is changed; please confirm the mail we sent.",
                  "I've moved your login to the new email."],
    "fix_login": ["I've sent a fresh reset link, valid for an hour.", "Your account is unlocked; try again now.",
                  "I've reset your session, so signing in works again."],
    "fix_replace": ["I've sent a replacement by express; tracking follows.",
                    "A replacement ships today, no need to send anything back."],
    "fix_return": ["A prepaid return label is attached to this reply.", "Your return label is in your inbox now."],
    "fix_address": ["I've updated the delivery address before dispatch.", "The courier has your new address now."],
    "fix_trace": ["I've opened a trace with the carrier and refunded the postage.",
                  "The courier is re-delivering tomorrow.", "The missing items ship today at no cost."],
    "the_app": ["the app", "to the newest version", "your app"],
    "reason": ["{why}; {handoff}.", "Escalating: {why}.", "{handoff}: {why}.", "{why}, so {handoff}."],
    "why": ["the customer says '{scue}'", "'{scue}' in the ticket", "they mention '{scue}'", "'{scue}', in their words",
            "the ticket says '{scue}'"],
    "handoff": ["this needs a senior", "over to a senior", "needs senior sign-off", "a senior should own it",
                "beyond my desk", "needs someone with authority", "senior call"],
    "reroute": ["Not {mine}: '{cue}' is {cat}.", "Wrong queue, '{cue}' belongs to {cat}.",
                "Passing to {cat}: it's about '{cue}'.", "{Cat} issue ('{cue}'), not {mine}."],
    "senior_open": ["{name}, I'm the senior on this and I own it now:", "Hi {name}, I've taken this over personally:",
                    "{name}, sorry this reached you late; I've stepped in:", "Hello {name}, senior support here:"],
    "senior_close": ["I've added a credit for the trouble.", "You have my direct line if it slips again.",
                     "I'm sorry it took this long.", "I'll check back tomorrow myself.", ""],
    "insight": ["{top} tickets keep coming; an answer that names the fix closes them.",
                "Repeat contacts and legal threats go to a senior, not a template.",
                "Misrouted tickets cost a round trip; pass them on quickly.",
                "Mostly {top} lately; specific fixes stop reopens.",
                "{urgent} urgent tickets recently: answer those first."],
    "step_specialist": ["answer my ticket with a concrete fix", "send misrouted tickets to the right queue",
                        "escalate repeat contacts and legal threats", "name the fix, skip the boilerplate",
                        "keep each answer short and specific"],
    "step_senior": ["resolve each escalation personally", "apologise once, then fix it fully",
                    "offer a credit when we failed the customer", "close escalations the same tick"],
})


FIXES = {  # (what the ticket says, the fix to offer), first match wins
    "billing": [(r"twice|overcharg|charge|bill", "fix_charge"), (r"refund", "fix_refund"),
                (r"invoice|receipt|vat", "fix_invoice"), (r"payment", "fix_payment"), (r"", "fix_price")],
    "technical": [(r"crash|freez|blank|loading", "fix_crash"), (r"sync|upload|timeout", "fix_sync"),
                  (r"notification", "fix_notify"), (r"", "fix_bug")],
    "account": [(r"two-factor", "fix_2fa"), (r"delete my account", "fix_delete"), (r"admin", "fix_admin"),
                (r"username", "fix_name"), (r"change the email", "fix_email"), (r"", "fix_login")],
    "shipping": [(r"wrong item|damaged", "fix_replace"), (r"return label", "fix_return"), (r"address", "fix_address"),
                 (r"", "fix_trace")],
}


def fix_for(r: Reading, text: str) -> str:
    """The grammar rule of the fix that answers this ticket."""
    body = REASSURED.sub("", text).lower()
    return next(rule for pattern, rule in FIXES[r.category] if re.search(pattern, body))


def triage_note(r: Reading, rng: random.Random) -> str:
    slots = {"cat": r.category, "Cat": r.category.capitalize(), "cue": r.cue, "pcue": r.priority_cue,
             "scue": r.senior_cue}
    note = TRIAGE.say("{note}{bit_" + r.priority + "}" + ("{bit_senior}" if r.senior else ""), rng, **slots)
    if len(note) > 99:
        note = TRIAGE.say("{note}{bit_" + r.priority + "}", rng, **slots)
    return note[:99] + "."


# -- the scenario -----------------------------------------------------------------------------


def build(sim, agents: int = 8, rate: float = 0.12, specialists: int | None = None):
    sim.wake_after = None  # arriving and moving tickets wake those with something to do; no need to ask the rest
    if agents < 6:
        raise ValueError(f"the support desk needs at least 6 agents (triage, 4 specialists, a senior), not {agents}")
    if not 0 < rate <= 2:
        raise ValueError(f"rate is new tickets per agent per tick, within (0, 2]; got {rate}")
    if specialists is None:
        seniors, triage = max(1, agents // 8), max(1, agents // 4)
        specialists = agents - seniors - triage
    elif not 4 <= specialists <= agents - 2:
        raise ValueError(f"specialists must be within 4..{agents - 2} for {agents} agents, not {specialists}")
    else:
        seniors = max(1, (agents - specialists) // 3)
        triage = agents - specialists - seniors
    sim.world.preamble = ("A customer support desk. Triage agents route each new ticket to a queue (billing, "
                          "technical, account, shipping) with a priority (low, normal, urgent); specialists answer "
                          "or escalate; seniors resolve escalations.")
    pools = {"triage": triage, **{c: len(range(i, specialists, 4)) for i, c in enumerate(CATEGORIES)},
             "senior": seniors}
    st = sim.state
    st.update(roles={}, desk={}, staff={p: [] for p in pools}, inbox={}, holding={}, tickets={}, rate=rate,
              queues={p: [] for p in (*CATEGORIES, "senior")}, next_id=1, rr=0,
              stats=dict.fromkeys(("created", "routed", "route_correct", "priority_correct", "resolved",
                                   "resolution_ticks", "breaches", "escalated", "reopened"), 0))
    n = 0
    for pool, count in pools.items():
        place, about = PLACES[pool]
        pods = [place] if count <= POD else [f"{place} {i + 1}" for i in range((count + POD - 1) // POD)]
        for pod in pods:
            sim.world.add_place(pod, about)
        sim.world.add_thing(THINGS[pool][0], at=pods[0], description=THINGS[pool][1], portable=False)
        role = pool if pool in ("triage", "senior") else "specialist"
        for i in range(count):
            name = FIRST_NAMES[n % len(FIRST_NAMES)] + (str(n // len(FIRST_NAMES) + 1) if n >= len(FIRST_NAMES) else "")
            n += 1
            sim.add_agent(_persona(name, role, pool, n), at=pods[i // POD])
            st["roles"][name] = role
            st["staff"][pool].append(name)
            if role == "triage":
                st["inbox"][name] = []
            else:
                st["holding"][name] = None
            if role == "specialist":
                st["desk"][name] = pool
    sim.remove_actions(Say, Move, Give, Use)
    sim.add_actions(Route, Answer, Escalate)
    # Handlers, hooks and metrics read sim.state when they run: loading a checkpoint replaces it.

    @sim.on(Route)
    def route(world, actor, a):
        st = sim.state
        t, fail = _held(st, world, actor, a, "route")
        if fail is not None:
            return fail
        if st["roles"][actor] == "senior":
            return world.fail(actor, a, "seniors answer escalations; they do not route")
        if a.queue not in CATEGORIES:
            return world.fail(actor, a, f"there is no {a.queue!r} queue; queues: {', '.join(CATEGORIES)}")
        stats = st["stats"]
        stats["routed"] += 1
        stats["route_correct"] += a.queue == t["category"]
        stats["priority_correct"] += a.priority == t["priority"]
        events = [world.event("route", f"{actor} routes {t['id']} to {a.queue} ({a.priority}).", actor=actor,
                              place=world.place_of(actor), data=msgspec.to_builtins(a), audience=[])]
        if st["roles"][actor] == "triage":
            st["inbox"][actor].remove(t["id"])
        else:  # a specialist passing a misrouted ticket on: its triage agent hears why
            st["holding"][actor] = None
            events.append(world.event("rerouted", f'{actor} moved {t["id"]} from {t["queue"]} to {a.queue}: '
                                                  f'"{a.note}"', actor=actor,
                                      audience=[t["triage"]], data={"ticket": t["id"]}, importance=6.0))
        t.update(queue=a.queue, routed_priority=a.priority, note=a.note, holder=None)
        st["queues"][a.queue].append(t["id"])
        return events

    @sim.on(Answer)
    def answer(world, actor, a):
        st = sim.state
        t, fail = _held(st, world, actor, a, "answer")
        if fail is not None:
            return fail
        st["holding"][actor] = None
        said = world.event("answer", f'{actor} answers {t["id"]}: "{a.text}"', actor=actor,
                           place=world.place_of(actor), data=msgspec.to_builtins(a), audience=[])
        if st["roles"][actor] == "senior" or (st["desk"][actor] == t["category"] and not t["senior"]):
            ticks = world.tick - t["arrived"]
            st["stats"]["resolved"] += 1
            st["stats"]["resolution_ticks"] += ticks
            del st["tickets"][t["id"]]
            return [said, world.event("resolved", f"{t['id']} is resolved after {ticks} ticks.",
                                      audience=[])]
        # the wrong desk, or a plain answer where a senior was needed: the customer writes back
        st["stats"]["reopened"] += 1
        t.update(queue=None, holder=None, routed_priority=None, reopened=t.get("reopened", 0) + 1)
        st["inbox"][t["triage"]].append(t["id"])
        follow = random.Random(f"{t['id']}:{world.tick}").choice(FOLLOW_UP)
        back = world.event("reopen", f'{t["id"]} is back: {t["customer"]} replied to {actor}: "{follow}" '
                                     f'Original: "{t["text"]}"', actor=t["customer"],
                           audience=[t["triage"]], data={"ticket": t["id"]}, importance=6.0)
        return [said, back]

    @sim.on(Escalate)
    def escalate(world, actor, a):
        st = sim.state
        t, fail = _held(st, world, actor, a, "escalate")
        if fail is not None:
            return fail
        if st["roles"][actor] == "senior":
            return world.fail(actor, a, "you are the senior: answer it")
        st["holding"][actor] = None
        st["stats"]["escalated"] += 1
        t.update(holder=None, escalated_by=actor, reason=a.reason)
        st["queues"]["senior"].append(t["id"])
        return world.event("escalate", f"{actor} escalates {t['id']}: {a.reason}", actor=actor,
                           place=world.place_of(actor), data=msgspec.to_builtins(a), audience=[])

    @sim.every_tick
    def desk(sim, events):
        st, world, tick = sim.state, sim.world, sim.world.tick
        out = _breaches(world, st, tick) + _arrivals(sim, st, tick) + _dispatch(world, st)
        return out + _reminders(world, st, tick, [*events, *out])

    @sim.actions_for
    def choices(sim, agent):
        st = sim.state
        role = st["roles"].get(agent.id)
        if role == "triage":
            waiting = st["inbox"][agent.id]
            return [narrow(Route, "ticket", (waiting[0],)), Wait] if waiting else [Wait]
        mine = st["holding"].get(agent.id)
        if mine is None:
            return [Wait]
        if role == "senior":
            return [narrow(Answer, "ticket", (mine,)), Wait]
        return [narrow(t, "ticket", (mine,)) for t in (Answer, Escalate, Route)] + [Wait]

    @sim.focus
    def in_hand(sim, agent):
        """The ticket the agent must deal with now, text and all: it closes the agent's prompt."""
        st = sim.state
        if st["roles"].get(agent.id) == "triage":
            waiting = st["inbox"][agent.id]
            return _shown(st["tickets"][waiting[0]], "Route") if waiting else None
        mine = st["holding"].get(agent.id)
        return _shown(st["tickets"][mine], "In your hands:") if mine is not None else None

    forecast = {}  # the tick it was made for -> {agent: idle ticks}: made once a tick, for every idle agent

    @sim.next_act
    def queue_position(sim, agent):
        """Triage agents act the tick after their next ticket arrives; free specialists and seniors when a
        ticket bound for their desk reaches them through the queue. Anything in hand is reminded every
        tick, so its holder acts at once (the framework sees that) and is never asked."""
        tick = sim.world.tick
        if tick not in forecast:
            forecast.clear()
            forecast[tick] = _forecast(sim)
        return forecast[tick].get(agent.id)

    for name, fn in METRICS.items():
        sim.metric(name)(fn)


def _shown(t: dict, lead: str) -> str:
    """A ticket as agents see it: id, customer and text, after `lead`."""
    return f'{lead} {t["id"]} from {t["customer"]}: "{t["text"]}"'


def _held(st: dict, world, actor: str, action, verb: str) -> tuple:
    """(the ticket `actor` holds and names, None), or (None, a fail event saying what they may name)."""
    t = st["tickets"].get(action.ticket)
    if st["roles"].get(actor) == "triage":
        mine = st["inbox"][actor]
        if t is None or action.ticket not in mine[:1]:
            return None, world.fail(actor, action, f"{action.ticket!r} is not next in your inbox; next: "
                                                   f"{mine[0] if mine else 'none'}")
        if verb != "route":
            return None, world.fail(actor, action, f"triage routes tickets; only specialists {verb} them")
        return t, None
    mine = st["holding"].get(actor)
    if t is None or action.ticket != mine:
        return None, world.fail(actor, action, f"you do not hold {action.ticket!r}; you hold: {mine or 'nothing'}")
    return t, None


def _share(sim, part: str, whole: str) -> float:
    stats = sim.state["stats"]
    return round(stats[part] / stats[whole], 4) if stats[whole] else 0.0


METRICS = {
    "routing_accuracy": lambda sim: _share(sim, "route_correct", "routed"),  # of every Route, the queue right
    "priority_accuracy": lambda sim: _share(sim, "priority_correct", "routed"),
    "mean_ticks_to_resolution": lambda sim: _share(sim, "resolution_ticks", "resolved"),
    "sla_breaches": lambda sim: sim.state["stats"]["breaches"],
    "resolved": lambda sim: sim.state["stats"]["resolved"],
    "open": lambda sim: len(sim.state["tickets"]),
    "tickets": lambda sim: sim.state["stats"]["created"],
    "escalated": lambda sim: sim.state["stats"]["escalated"],
    "reopened": lambda sim: sim.state["stats"]["reopened"],
}


def _persona(name: str, role: str, pool: str, n: int) -> Persona:
    traits = TRAITS[role][n % len(TRAITS[role])]
    if role == "triage":
        return Persona(name=name, role="triage agent", traits=traits, style="triage",
                       goals=("route every ticket to the right queue with the right priority",))
    if role == "senior":
        return Persona(name=name, role="senior support engineer", traits=traits, style="specialist",
                       goals=("resolve every escalated ticket for good",))
    return Persona(name=name, role=f"{pool} specialist", traits=traits, style="specialist",
                   goals=(f"resolve {pool} tickets with the first answer",))


def _breaches(world, st, tick: int) -> list:
    out = []
    for t in st["tickets"].values():
        if not t["breached"] and tick >= t["arrived"] + SLA[t["priority"]]:
            t["breached"] = True
            st["stats"]["breaches"] += 1
            who = [t["holder"]] if t["holder"] else [t["triage"]] if t["id"] in st["inbox"][t["triage"]] else []
            out.append(world.event("sla", f"{t['id']} breached its {SLA[t['priority']]}-tick SLA.",
                                   audience=who, data={"ticket": t["id"]}, importance=8.0))
    return out


def _arrivals(sim, st, tick: int) -> list:
    """New tickets, as many as the team's size calls for, dealt round the triage agents."""
    rng = random.Random(f"support_desk:{sim.seed}:{tick}")  # the same stream whatever the agents did
    expected = st["rate"] * len(st["roles"])
    count = int(expected) + (rng.random() < expected % 1)
    out = []
    for _ in range(count):
        category = rng.choice(CATEGORIES)
        priority = rng.choices(PRIORITIES, [PRIORITY_ODDS[p] for p in PRIORITIES])[0]
        senior = rng.random() < SENIOR_ODDS
        text, customer = write_ticket(rng, category, priority, senior)
        tid = f"T-{st['next_id']:04d}"
        st["next_id"] += 1
        triage = st["staff"]["triage"][st["rr"] % len(st["staff"]["triage"])]
        st["rr"] += 1
        st["tickets"][tid] = {"id": tid, "customer": customer, "text": text, "category": category,
                              "priority": priority, "senior": senior, "arrived": tick, "triage": triage,
                              "queue": None, "routed_priority": None, "note": "", "holder": None, "breached": False}
        st["inbox"][triage].append(tid)
        st["stats"]["created"] += 1
        out.append(_event(sim.world, "ticket", _shown(st["tickets"][tid], "New ticket"), [triage],
                               tid, 7.0 if priority == "urgent" else 5.0, actor=customer))
    return out


def _dispatch(world, st) -> list:
    """Each queue's most urgent, oldest tickets go to its free staff, one ticket each."""
    out = []
    for pool, queue in st["queues"].items():
        if not queue:
            continue
        free = [s for s in st["staff"][pool] if st["holding"][s] is None]
        queue.sort(key=lambda tid: (RANK[st["tickets"][tid]["routed_priority"]], st["tickets"][tid]["arrived"], tid))
        taken, queue[:] = queue[: len(free)], queue[len(free) :]
        for who, tid in zip(free, taken, strict=False):  # as many as there are free hands
            t = st["tickets"][tid]
            t["holder"] = who
            st["holding"][who] = tid
            out.append(_event(world, "assign", _assignment(t, pool), [who], tid,
                                   7.0 if t["routed_priority"] == "urgent" else 6.0))
    return out


def _assignment(t: dict, pool: str) -> str:
    if pool == "senior":
        return (f'{t["id"]} is escalated to you by {t["escalated_by"]}: "{t["reason"]}" '
                f'{t["customer"]} wrote: "{t["text"]}"')
    return (f'{t["id"]} ({t["routed_priority"]}) from the {pool} queue is yours. Triage note: "{t["note"]}" '
            f'{t["customer"]} wrote: "{t["text"]}"')


SHOWN = ("ticket", "assign", "reopen")  # the events that show a ticket's text


def _reminders(world, st, tick: int, events: list) -> list:
    """Whoever has a ticket in hand (a triage agent: the oldest in its inbox) hears of it again, text and
    all, unless the last thing told to them this tick already showed it: an agent acts only when it observes
    something, and the ticket to act on is then the last thing it was told."""
    last = {}  # agent -> the last event addressed to them this tick
    for e in events:
        for who in e.audience or ():
            last[who] = e

    def shown(who: str, tid: str) -> bool:
        e = last.get(who)
        return e is not None and e.kind in SHOWN and e.data.get("ticket") == tid

    out = []
    for who, waiting in st["inbox"].items():
        if waiting and not shown(who, waiting[0]):
            t = st["tickets"][waiting[0]]
            more = f" ({len(waiting) - 1} more waiting)" if len(waiting) > 1 else ""
            out.append(_event(world, "reminder", _shown(t, "Still to route:") + more, [who], t["id"], 4.0))
    for who, tid in st["holding"].items():
        if tid is not None and not shown(who, tid):
            t = st["tickets"][tid]
            out.append(_event(world, "reminder", f"{tid} is still yours ({tick - t['arrived']} ticks old). "
                                                      f'{t["customer"]} wrote: "{t["text"]}"', [who], tid, 4.0))
    return out


FORESEE = 64  # ticks of arrivals looked ahead for triage agents with an empty inbox


def _forecast(sim) -> dict[str, int]:
    """After this tick's desk work: how many ticks each idle agent waits before its next turn, where the
    tickets already in the building (or the arrivals, which are seeded by tick alone) say. A ticket waits
    in a triage inbox one tick per ticket ahead of it, is routed to its true queue (a careful reader's
    choice) and reaches the queue's first free hands the same tick; they act the tick after."""
    st, tick = sim.state, sim.world.tick
    out = _arrivals_for_triage(sim, st, tick)
    ready: dict[str, list[int]] = {pool: [] for pool in st["queues"]}  # pool -> ticks its tickets get dispatched
    for waiting in st["inbox"].values():
        for k, tid in enumerate(waiting):  # routed in tick +1+k, dispatched then
            t = st["tickets"][tid]
            ready[t["category"]].append(1 + k)
            if t["senior"]:
                ready["senior"].append(2 + k)  # its specialist escalates the tick after
    for who, tid in st["holding"].items():
        if tid is not None and st["roles"][who] == "specialist":
            t = st["tickets"][tid]
            if t["category"] != st["desk"][who]:  # passed on next tick
                ready[t["category"]].append(1)
            if t["senior"]:
                ready["senior"].append(1 if t["category"] == st["desk"][who] else 2)
    expected = st["rate"] * len(st["roles"])  # new tickets a tick
    for pool, ticks in ready.items():
        counts = Counter(ticks)
        # beyond the tickets in the building: the first of the pool waits for the next new ticket of its
        # kind (routed, then escalated for a senior), the others for a tick that brings two at once
        share = SENIOR_ODDS if pool == "senior" else 1 / len(CATEGORIES)
        later = (2 if pool == "senior" else 1) + math.ceil(1 / (expected * share))
        # the desk hands tickets to free staff in their order, so the n-th of a pool gets one only in a tick
        # that brings more than n
        for n, who in enumerate(st["staff"][pool]):
            if st["holding"][who] is None:
                out[who] = min((d for d, c in counts.items() if c > n), default=later if n == 0 else math.inf)
    return out


def _arrivals_for_triage(sim, st: dict, tick: int) -> dict[str, int]:
    """Idle ticks of each triage agent with an empty inbox: its next ticket arrives in tick +1+d (dealt
    round the triage agents, as many a tick as `_arrivals` draws), and it acts the tick after."""
    staff, out = st["staff"]["triage"], {}
    waiting = {who for who in staff if not st["inbox"][who]}
    expected, rr = st["rate"] * len(st["roles"]), st["rr"]
    for d in range(FORESEE):
        if not waiting:
            break
        rng = random.Random(f"support_desk:{sim.seed}:{tick + 1 + d}")  # the draw `_arrivals` will make
        count = int(expected) + (rng.random() < expected % 1)
        for k in range(rr, rr + min(count, len(staff))):
            who = staff[k % len(staff)]
            if who in waiting:
                waiting.discard(who)
                out[who] = d + 1
        rr += count
    return out


def _event(world, kind: str, text: str, audience: list, ticket: str, importance: float, actor=None):
    return world.event(kind, text, actor=actor, audience=audience, data={"ticket": ticket}, importance=importance)


# -- the scripted staff (the teacher for demonstrations) ------------------------------------------


def policy(turn):
    """Triage reads the oldest waiting ticket and routes it; a specialist passes on a misrouted ticket,
    escalates one that needs a senior and answers the rest; a senior answers. Every decision is read from
    the ticket text the agent's prompt shows."""
    rng = random.Random(turn.seed)
    st, me, kind = turn.sim.state, turn.agent.id, turn.request.kind
    role = st["roles"].get(me)
    if kind == "reflect":
        return Insight(text=_insight(turn, role, rng))
    if kind == "plan":
        lines, rule = (TRIAGE, "step_triage") if role == "triage" else (SPECIALIST, f"step_{role}")
        return PlanUpdate(steps=[lines.say(s, rng) for s in rng.sample(lines.rules[rule], rng.randint(2, 3))])
    types = {t.__struct_config__.tag: t for t in typing.get_args(turn.request.schema) or (turn.request.schema,)}
    if role == "triage" and st["inbox"].get(me) and "route" in types:
        t = st["tickets"][st["inbox"][me][0]]
        r = read_ticket(t["text"])
        return types["route"](ticket=t["id"], queue=r.category, priority=r.priority, note=triage_note(r, rng))
    mine = st["holding"].get(me)
    if mine is not None and "answer" in types:
        t = st["tickets"][mine]
        r = read_ticket(t["text"])
        slots = {"name": t["customer"], "cat": r.category, "Cat": r.category.capitalize(), "cue": r.cue,
                 "scue": r.senior_cue, "mine": st["desk"].get(me, "")}
        if role == "senior":
            text = _fit(SPECIALIST, f"{{senior_open}} {{{fix_for(r, t['text'])}}} {{senior_close}}", 160, rng, **slots)
            return types["answer"](ticket=mine, text=text)
        if r.category != st["desk"][me] and "route" in types:
            return types["route"](ticket=mine, queue=r.category, priority=r.priority,
                                  note=_fit(SPECIALIST, "{reroute}", 100, rng, **slots))
        if r.senior and "escalate" in types:
            return types["escalate"](ticket=mine, reason=_fit(SPECIALIST, "{reason}", 100, rng, **slots))
        text = _fit(SPECIALIST, f"{{greet}} {{aside}} {{{fix_for(r, t['text'])}}} {{close}}", 160, rng, **slots)
        return types["answer"](ticket=mine, text=text)
    return Wait()


def _fit(lines: Grammar, template: str, limit: int, rng: random.Random, **slots) -> str:
    """A line from `template` within `limit` characters, spaces tidied (a few tries, then cut at a word)."""
    for _ in range(4):
        text = " ".join(lines.say(template, rng, **slots).split())
        if len(text) <= limit:
            return text
    return text[:limit].rsplit(" ", 1)[0]


def _insight(turn, role: str, rng: random.Random) -> str:
    """A conclusion from the memories the reflection prompt lists: the commonest category, the urgent count."""
    texts = [m.text for m in turn.agent.memory.reflection_sources() if m.kind == "observation" and '"' in m.text]
    readings = [read_ticket(t.split('"', 1)[1]) for t in texts]
    top = Counter(r.category for r in readings).most_common(1)
    urgent = sum(r.priority == "urgent" for r in readings)
    lines = TRIAGE if role == "triage" else SPECIALIST
    return lines.say("{insight}", rng, top=top[0][0] if top else "mixed", urgent=str(urgent))[:200]
