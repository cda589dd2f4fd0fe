"""An auction: traders bid for lots in a market hall; the highest bid takes a lot when it closes.
Run: swarm run examples/auction.py --ticks 20 (--model scripted: the policy below; --model random: the floor).
Option: traders (default 6), e.g. Simulation.from_scenario("examples/auction.py", model="scripted", traders=4)."""
import random
from typing import Annotated

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Give, Insight, Move, PlanUpdate, Say, Use, Wait, one_of

MAIN_METRIC = "trades"  # what benchmarks compare across models
HALL, AUCTIONEER, OPEN_TICKS = "market hall", "Hilde", 3  # a lot takes bids for 3 ticks after it comes up
LOTS = {"wool": 12, "grain": 8, "salt": 15, "cloth": 20, "iron": 25, "honey": 10, "timber": 18, "wine": 22}
CARRIED = {"Oren": ("furs", 16), "Pell": ("spices", 14)}  # traders who bring something of their own to sell
PRICES = {**LOTS, **dict(CARRIED.values())}  # a lot is worth twice this to a trader who wants it
TRADERS = [("Bram", "weaver", ("wool", "cloth")), ("Tova", "baker", ("grain", "spices")),
           ("Ilse", "smith", ("iron", "timber")), ("Oren", "fishmonger", ("salt", "honey")),
           ("Pell", "innkeeper", ("wine", "honey")), ("Mira", "tailor", ("cloth", "furs")),
           ("Wendel", "carpenter", ("timber", "iron")), ("Ada", "cook", ("salt", "grain"))]
COINS = 60  # each trader's purse
Price = Annotated[int, msgspec.Meta(ge=1, le=100, description="coins")]


class Bid(Action, tag="bid"):
    """Bid for a lot on sale: the highest bid when it closes buys it."""

    lot: one_of("lot", "a lot on sale now")  # names from on_sale() below: the grammar offers only those
    price: Price


class Offer(Action, tag="offer"):
    """Put something you carry up for sale, with the lowest price you take."""

    lot: one_of("ware", "something you carry that is not on sale")
    price: Price


def build(sim, traders: int = 6):
    if not 2 <= traders <= len(TRADERS):
        raise ValueError(f"traders must be 2-{len(TRADERS)}, got {traders}")
    sim.world.preamble = "A market hall on auction day. Lots come up for sale; traders bid coins for them."
    sim.world.add_place(HALL)
    sim.add_agent(Persona(name=AUCTIONEER, role="auctioneer", goals=("sell every lot for a good price",)), at=HALL)
    sim.state.update(coins={AUCTIONEER: 0}, wants={}, open={}, trades=0, coins_moved=0, bids=0)
    for name, role, wants in TRADERS[:traders]:
        sim.state["coins"][name] = COINS
        sim.state["wants"][name] = worth = {lot: 2 * PRICES[lot] for lot in wants}
        goal = " and ".join(f"buy {lot} for at most {worth[lot]} coins" for lot in wants)
        sim.add_agent(Persona(name=name, role=f"{role}, a trader", goals=(goal,)), at=HALL)
        if name in CARRIED:
            sim.world.add_thing(CARRIED[name][0], holder=name)
    for lot in LOTS:
        sim.world.add_thing(lot, holder=AUCTIONEER)
    sim.add_actions(Bid, Offer)
    sim.remove_actions(Move, Give, Use)  # one hall, and lots change hands only by sale

    @sim.choices
    def on_sale(sim, agent):
        s, me = sim.state, agent.id
        mine = [t for t in sim.world.inventory(me) if t not in s["open"]]
        biddable = [lot for lot, o in s["open"].items() if o["seller"] != me and me != AUCTIONEER]
        return {"lot": biddable, "ware": mine}

    @sim.on(Offer)
    def offer(world, actor, action):
        if action.lot not in world.inventory(actor) or action.lot in sim.state["open"]:
            return world.fail(actor, action, f"you carry no {action.lot!r} that is not on sale already")
        return put_up(sim, actor, action.lot, action.price)

    @sim.on(Bid)
    def bid(world, actor, action):
        lot, coins = sim.state["open"].get(action.lot), sim.state["coins"].get(actor, 0)
        if lot is None or lot["seller"] == actor:
            return world.fail(actor, action, f"{action.lot!r} is not on sale to you now")
        best = max(lot["bids"].values(), default=lot["price"] - 1)
        if action.price > coins or action.price <= best:
            why = f"you have {coins} coins" if action.price > coins else f"bid more than {best} coins"
            return world.fail(actor, action, why)
        lot["bids"][actor] = action.price
        sim.state["bids"] += 1
        return world.event("bid", f"{actor} bids {action.price} coins for the {action.lot}.", actor=actor,
                           place=HALL, target=action.lot, data=msgspec.to_builtins(action), importance=6.0)

    @sim.every_tick
    def close_lots(sim, events):
        s, out = sim.state, []
        for name, lot in list(s["open"].items()):
            if lot["closes"] <= sim.world.tick:
                del s["open"][name]
                out.append(sell(sim, name, lot))
        if not s["open"] and sim.world.inventory(AUCTIONEER):  # a quiet hall: the next lot comes up
            name = sim.world.inventory(AUCTIONEER)[0]
            out.append(put_up(sim, AUCTIONEER, name, LOTS[name]))
        return out

    @sim.focus
    def standing(sim, agent):  # what is on sale, what it is worth to this agent, and its purse
        s, me = sim.state, agent.id
        lots = [f"the {n} (lowest price {o['price']}, best bid {max(o['bids'].values(), default='none')}, closes at "
                f"tick {o['closes']}" + (f"; you would pay up to {s['wants'][me][n]})" if n in s["wants"].get(me, {})
                                         else ")") for n, o in s["open"].items() if o["seller"] != me]
        return f"On sale: {'; '.join(lots) or 'nothing'}. You have {s['coins'][me]} coins."

    sim.metric("trades")(lambda sim: sim.state["trades"])
    sim.metric("coins_moved")(lambda sim: sim.state["coins_moved"])
    sim.metric("bids")(lambda sim: sim.state["bids"])


def put_up(sim, seller, name, price):
    sim.state["open"][name] = {"seller": seller, "price": price, "closes": sim.world.tick + OPEN_TICKS, "bids": {}}
    return sim.world.event("offer", f"{seller} puts up the {name}: lowest price {price} coins, bids close at tick "
                           f"{sim.world.tick + OPEN_TICKS}.", actor=seller, place=HALL, target=name, importance=6.0)


def sell(sim, name, lot):
    """The highest bidder who can still pay buys the lot; with no such bid it goes back to its seller."""
    s = sim.state
    for buyer, price in sorted(lot["bids"].items(), key=lambda b: -b[1]):
        if s["coins"][buyer] >= price:
            s["coins"][buyer] -= price
            s["coins"][lot["seller"]] = s["coins"].get(lot["seller"], 0) + price
            sim.world.things[name].holder = buyer
            s["trades"] += 1
            s["coins_moved"] += price
            return sim.world.event("sold", f"Sold: the {name} to {buyer} for {price} coins.", place=HALL,
                                   target=buyer, data={"lot": name, "price": price}, importance=7.0)
    return sim.world.event("unsold", f"Nobody bought the {name}; {lot['seller']} keeps it.", place=HALL,
                           data={"lot": name}, importance=4.0)


def policy(turn):  # scripted traders bid up to what a lot is worth to them and sell what they do not want
    rng, me, s, choices = random.Random(turn.seed), turn.agent.id, turn.sim.state, turn.request.choices or {}
    if turn.request.kind != "act":
        return PlanUpdate(steps=["bid for what I need"]) if turn.request.kind == "plan" else Insight(text="Bid late.")
    wants, coins = s["wants"].get(me, {}), s["coins"].get(me, 0)
    for name in choices.get("lot", ()):
        lot = s["open"][name]
        best = max(lot["bids"].values(), default=lot["price"] - 1)
        if name in wants and lot["bids"].get(me) != best and best < min(wants[name], coins):
            return Bid(lot=name, price=min(wants[name], coins, best + rng.randint(1, 5)))
    spare = [t for t in choices.get("ware", ()) if t not in wants]
    if spare and (me != AUCTIONEER or len(s["open"]) < 2):  # the auctioneer keeps two lots going
        return Offer(lot=spare[0], price=PRICES[spare[0]])
    return Say(text="Who bids more?") if rng.random() < 0.3 else Wait()
