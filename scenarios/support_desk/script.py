"""The scripted staff (`--model scripted`, the teacher for demonstrations): triage routes the oldest waiting
ticket as a careful reader reads it, with a terse note; a specialist passes on a misrouted ticket, escalates
one that needs a senior and answers the rest with the fix it asks for; a senior answers escalations."""

from __future__ import annotations

import random
import re
import typing
from collections import Counter

from swarm.agents.actions import Insight, PlanUpdate, Wait
from swarm.scenarios._phrasing import Grammar
from swarm.scenarios.support_desk.tickets import REASSURED, Reading, read_ticket

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


def policy(turn):
    """Triage reads the oldest waiting ticket and routes it; a specialist passes on a misrouted ticket,
    escalates one that needs a senior and answers the rest; a senior answers. Every decision is read from
    the ticket text the agent's prompt shows."""
    rng = random.Random(turn.seed)
    st, me, kind = turn.sim.state, turn.agent.id, turn.request.kind
    role = st.roles.get(me)
    if kind == "reflect":
        return Insight(text=_insight(turn, role, rng))
    if kind == "plan":
        lines, rule = (TRIAGE, "step_triage") if role == "triage" else (SPECIALIST, f"step_{role}")
        return PlanUpdate(steps=[lines.say(s, rng) for s in rng.sample(lines.rules[rule], rng.randint(2, 3))])
    types = {t.__struct_config__.tag: t for t in typing.get_args(turn.request.schema) or (turn.request.schema,)}
    if role == "triage" and st.inbox.get(me) and "route" in types:
        t = st.tickets[st.inbox[me][0]]
        r = read_ticket(t.text)
        return types["route"](ticket=t.id, queue=r.category, priority=r.priority, note=triage_note(r, rng))
    mine = st.holding.get(me)
    if mine is not None and "answer" in types:
        t = st.tickets[mine]
        r = read_ticket(t.text)
        slots = {"name": t.customer, "cat": r.category, "Cat": r.category.capitalize(), "cue": r.cue,
                 "scue": r.senior_cue, "mine": st.desk.get(me, "")}
        if role == "senior":
            text = _fit(SPECIALIST, f"{{senior_open}} {{{fix_for(r, t.text)}}} {{senior_close}}", 160, rng, **slots)
            return types["answer"](ticket=mine, text=text)
        if r.category != st.desk[me] and "route" in types:
            return types["route"](ticket=mine, queue=r.category, priority=r.priority,
                                  note=_fit(SPECIALIST, "{reroute}", 100, rng, **slots))
        if r.senior and "escalate" in types:
            return types["escalate"](ticket=mine, reason=_fit(SPECIALIST, "{reason}", 100, rng, **slots))
        text = _fit(SPECIALIST, f"{{greet}} {{aside}} {{{fix_for(r, t.text)}}} {{close}}", 160, rng, **slots)
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
