"""A top-down village in pygame: swarm-tiny villagers walk between places, talk in speech bubbles
streamed token by token, and answer you. The model runs inside the frame loop within a budget.

    python examples/pygame_village/village_game.py                  # a window; arrows move, space talks
    SDL_VIDEODRIVER=dummy python examples/pygame_village/village_game.py --frames 600    # headless

At the end (or on quit) it prints frame-time statistics as JSON: the work per frame (game logic,
`runtime.update`, drawing; not the wait for the next frame) as mean, p99 and max milliseconds, and
the model's share of it. Headless, a scripted player walks the square and greets whoever is near.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import pygame
import torch

from swarm.agents.actions import Say
from swarm.game import ACT_INSTRUCTION, GameRuntime
from swarm.scenarios.village import PREAMBLE
from swarm.scenarios.village.people import CAST, PLACES

SIZE = (720, 480)
SPOTS = {"square": (360, 250), "tavern": (150, 110), "mill": (600, 100), "market": (170, 390)}
COLOURS = {"square": (222, 214, 180), "tavern": (176, 120, 80), "mill": (170, 190, 200), "market": (200, 170, 110)}
SPEED, NEAR = 70.0, 90.0  # pixels per second; how close one must be to hear
TALK_EVERY = (4.0, 9.0)  # seconds between a villager's lines, when nobody speaks to it
BUBBLE_S = 3.0  # a finished line stays up this long


class Villager:
    def __init__(self, name: str, role: str, traits: str, style: str, rng: random.Random, runtime: GameRuntime):
        from swarm import Persona

        adapter = style if style in runtime.engine.adapters() else None
        self.character = runtime.character(name, Persona(name=name, role=role, traits=traits, adapter=adapter))
        self.name, self.role, self.rng = name, role, rng
        self.place = rng.choice(list(SPOTS))
        self.pos = pygame.Vector2(SPOTS[self.place]) + (rng.uniform(-40, 40), rng.uniform(-30, 30))
        self.target = pygame.Vector2(self.pos)
        self.heard: list[str] = []  # what was said near it since its last line
        self.next_talk = rng.uniform(*TALK_EVERY)
        self.line = None
        self.bubble, self.bubble_until = "", 0.0

    def walk(self, dt: float, now: float) -> None:
        if self.pos.distance_to(self.target) < 2:
            if self.rng.random() < 0.004:  # now and then, off somewhere else
                self.place = self.rng.choice(list(SPOTS))
                self.target = pygame.Vector2(SPOTS[self.place]) + (self.rng.uniform(-50, 50), self.rng.uniform(-35, 35))
            return
        self.pos.move_towards_ip(self.target, SPEED * dt)

    def prompt(self, tick: int, others: list[Villager]) -> str:
        """The observation, written the way swarm's village scenario writes them (what swarm-tiny knows)."""
        minute = 14 * 60 + tick * 10
        here = ", ".join(o.name for o in others) or "nobody"
        heard = "\n".join(f"- {h}" for h in self.heard[-3:]) or f"- You are at the {self.place}."
        return (f"Tick {tick}. It is day 1, {minute // 60 % 24:02d}:{minute % 60:02d}. You are at the {self.place} "
                f"({PLACES[self.place]}).\nHere with you: {here}.\nThings here: none. You carry: none.\n\n"
                f"New observations:\n{heard}\n\nAnswer with one action as JSON.")


def spoken(raw: str) -> str:
    """The `text` of a Say action from the JSON generated so far (a bubble fills as tokens arrive)."""
    start = raw.find('"text":"')
    if start < 0:
        return ""
    text, escaped = [], False
    for ch in raw[start + 8 :]:
        if escaped:
            text.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            break
        else:
            text.append(ch)
    return "".join(text)


class Game:
    def __init__(self, args: argparse.Namespace):
        self.args, self.rng = args, random.Random(args.seed)
        self.runtime = GameRuntime(args.model, world=PREAMBLE, instruction=ACT_INSTRUCTION, threaded=args.threaded,
                               max_tokens=40, temperature=0.8)
        self.villagers = [Villager(*c, random.Random(args.seed * 100 + i), self.runtime)
                          for i, c in enumerate(CAST[: args.villagers])]
        if not args.threaded:
            self.runtime.warmup(pin=True)  # a loading screen's work: every persona prompt prefilled once
        self.player = pygame.Vector2(SPOTS["square"])
        self.now, self.tick, self.lines_done, self.tokens = 0.0, 0, 0, 0

    def near(self, pos: pygame.Vector2, but=None) -> list[Villager]:
        return [v for v in self.villagers if v is not but and v.pos.distance_to(pos) < NEAR]

    def speak_to(self, v: Villager) -> None:
        seed = self.rng.randrange(2**31)

        def on_token(line, _piece):
            v.bubble = spoken(line.text)
            self.tokens += 1

        def on_done(line):
            self.lines_done += 1
            v.line, v.bubble_until = None, self.now + BUBBLE_S
            text = line.value.text if isinstance(line.value, Say) else ""
            v.bubble = text or "..."
            for other in self.near(v.pos, but=v):  # whoever is near hears it, and will answer sooner
                other.heard.append(f'{v.name} says: "{text}"')
                other.next_talk = min(other.next_talk, self.now + self.rng.uniform(0.5, 2.0))

        v.line = v.character.say(v.prompt(self.tick, self.near(v.pos, but=v)), schema=Say, seed=seed,
                                 on_token=on_token, on_done=on_done)
        v.heard.clear()
        v.next_talk = self.now + self.rng.uniform(*TALK_EVERY)

    def player_says(self, text: str) -> None:
        for v in self.near(self.player):
            v.heard.append(f'The traveller says to {v.name}: "{text}"')
            v.next_talk = min(v.next_talk, self.now + 0.2)

    def update(self, dt: float, keys) -> None:
        self.now += dt
        self.tick = int(self.now // 5)  # one village tick (ten minutes) every five seconds
        move = pygame.Vector2(keys[pygame.K_RIGHT] - keys[pygame.K_LEFT], keys[pygame.K_DOWN] - keys[pygame.K_UP])
        self.player += move * SPEED * 1.5 * dt
        for v in self.villagers:
            v.walk(dt, self.now)
            if v.line is None and self.now >= v.next_talk:
                self.speak_to(v)
            if v.line is None and v.bubble and self.now > v.bubble_until:
                v.bubble = ""

    def scripted_player(self, frame: int) -> None:
        """Headless: walk a loop through the square, greeting whoever is near every three seconds."""
        spot = list(SPOTS.values())[(frame // 240) % len(SPOTS)]
        self.player.move_towards_ip(spot, SPEED * 1.5 / self.args.fps)
        if frame % (3 * self.args.fps) == 0:
            self.player_says(self.rng.choice(["Good day! Any news?", "Where is the tavern?", "What are you up to?"]))

    def draw(self, screen, font) -> None:
        screen.fill((96, 140, 80))
        for name, (x, y) in SPOTS.items():
            pygame.draw.rect(screen, COLOURS[name], (x - 70, y - 45, 140, 90), border_radius=8)
            screen.blit(font.render(name, True, (40, 30, 20)), (x - 66, y - 43))
        for v in self.villagers:
            pygame.draw.circle(screen, (60, 60, 160) if v.line else (30, 30, 30), v.pos, 7)
            screen.blit(font.render(v.name, True, (250, 250, 250)), (v.pos.x - 12, v.pos.y + 8))
            if v.bubble:
                self.bubble(screen, font, v.pos, v.bubble)
        pygame.draw.rect(screen, (200, 40, 40), (self.player.x - 7, self.player.y - 7, 14, 14))

    @staticmethod
    def bubble(screen, font, pos, text: str) -> None:
        words, rows, row = text.split(), [], ""
        for w in words:
            if len(row) + len(w) > 28:
                rows.append(row)
                row = ""
            row = f"{row} {w}".strip()
        rows = [*rows, row][-3:]
        w = max(font.size(r)[0] for r in rows) + 10
        box = pygame.Rect(pos.x - w // 2, pos.y - 22 - 15 * len(rows), w, 15 * len(rows) + 6)
        pygame.draw.rect(screen, (255, 255, 245), box, border_radius=6)
        for i, r in enumerate(rows):
            screen.blit(font.render(r, True, (20, 20, 20)), (box.x + 5, box.y + 3 + 15 * i))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="swarm-tiny")
    p.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: until the window closes)")
    p.add_argument("--fps", type=int, default=60)
    p.add_argument("--budget-ms", type=float, default=6.0, help="model time per frame (runtime.update)")
    p.add_argument("--threaded", action="store_true", help="run the model in a background thread instead")
    p.add_argument("--villagers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the model (the game keeps a core)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    headless = args.frames > 0
    pygame.display.init()  # no audio: nothing here plays sound
    pygame.font.init()
    screen = pygame.display.set_mode(SIZE)
    pygame.display.set_caption("swarm village: arrows move, space talks")
    font = pygame.font.Font(None, 18)
    game, clock = Game(args), pygame.time.Clock()
    work, model = [], []
    frame = 0
    try:
        while not args.frames or frame < args.frames:
            t0 = time.perf_counter()
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    args.frames = frame  # stop now
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_SPACE:
                    game.player_says("Hello there! Any news?")
            if headless:
                game.scripted_player(frame)
            game.update(1 / args.fps, pygame.key.get_pressed())  # fixed steps: the same run at any speed
            t1 = time.perf_counter()
            game.runtime.update(args.budget_ms)
            t2 = time.perf_counter()
            game.draw(screen, font)
            pygame.display.flip()
            work.append(time.perf_counter() - t0)
            model.append(t2 - t1)
            frame += 1
            if not headless:
                clock.tick(args.fps)
    finally:
        stats = game.runtime.stats()
        game.runtime.close()
        pygame.quit()
    ms = sorted(w * 1000 for w in work)
    report = {"frames": len(work), "budget_ms": args.budget_ms, "threaded": args.threaded,
              "frame_ms": {"mean": round(statistics.fmean(ms), 2), "p99": round(ms[int(0.99 * (len(ms) - 1))], 2),
                           "max": round(ms[-1], 2)},
              "model_share": round(sum(model) / sum(work), 3), "lines_finished": game.lines_done,
              "tokens_streamed": game.tokens, "engine_tokens_per_s": round(stats["tokens_per_s"], 1),
              "prefix_cache_hit_rate": round(stats["prefix_cache_hit_rate"], 3)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)
