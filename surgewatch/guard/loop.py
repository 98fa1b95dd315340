"""The guard: sheds the cheapest traffic first when the fleet runs hot, within the policy's bounds.

Each `step(observation)`:
1. frozen data (`guard_signals.observe`) -> nothing is done, and the reason is logged and published;
2. a tier an operator changed (an audit entry by anyone but this guard) is left alone for the cool-down;
3. a signal above its target for its sustain time -> one step: the first tier of `order` above its
   floor. The share of the fleet's admitted load to shed is the worst signal's excess
   (`guard_signals.excess_share`, bounded by min/max_shed_pct); times the fleet's admitted rate it is the
   reduction asked of the tier. With the limit lever: the highest per-user limit the what-if
   (`QuotaStore.preview`) says refuses that share of the tier's admitted requests, at most `step_pct`
   of its limit, never below its floor. With the cap lever (`guard_cap`): a tier cap of the tier's
   admitted rate less that reduction, at most `step_pct` of the rate, never below `cap_floor_rps`; the
   what-if says what it would have refused (nothing: no step);
4. every signal below its release level for `hold_s` -> one step of capacity back (the last tier shed
   first: its limit or cap up by give_back_pct); the step that would reach the quota in force before
   the guard (or, for a cap, no longer bind the tier's offered rate) is not written: the override
   lapses by itself;
5. (auto) the guard's overrides are renewed before they end while it still holds them.
Steps are `cooldown_s` apart (an accepted proposal counts as a step when the guard sees it accepted) and at
most `max_changes_per_hour`. An open proposal whose reason no longer holds (a shed while no signal is above
its target, a give-back while a signal is above release) is withdrawn. In auto mode a step is a temporary
override (`for_s`), compare-and-set on the version read; a Conflict is never retried: the next look
re-reads and decides again. In propose mode nothing is written: the step is published as a proposal.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from quotas.codec import EXPIRED_BY
from quotas.errors import BrokenQuota, Conflict, Unreachable
from quotas.model import Quota, QuotaError, QuotaSpec, iso
from surgewatch.guard import signals
from surgewatch.guard.board import Board, Proposal, new_id
from surgewatch.guard.cap import at_cap_floor, give_back_cap, label, shed_cap
from surgewatch.guard.policy import GuardMode, Policy, SignalRule
from surgewatch.guard.signals import Observation, Sustain, describe, exceeded_text, excess_share, fmt, headroom_share
from surgewatch.guard.voice import Said

log = logging.getLogger(__name__)
SYSTEM_ACTORS = (EXPIRED_BY, "surgewatch init")


@dataclass
class _Tier:
    seen_version: int | None = None
    held_until: float = 0.0  # the guard's clock: leave the tier alone until then
    original: QuotaSpec | None = None  # what the tier had before the guard's first step
    lapsing: bool = False  # the last give-back: the override is left to end by itself


@dataclass
class Guard:
    """One guard on one store. `clock` times sustain, cool-down and budget; `wall` is the server-side
    epoch used for override expiry (the two differ only in a simulation run faster than real time)."""

    store: Any
    policy: Policy
    actor: str
    mode: GuardMode = "propose"
    dry_run: bool = False
    board: Board | None = None
    clock: Callable[[], float] = time.time
    wall: Callable[[], float] = time.time
    say: Callable[[str], None] = field(default=lambda text: log.info("%s", text))
    sustain: Sustain = field(default_factory=Sustain)
    tiers: dict[str, _Tier] = field(default_factory=dict)
    changes: deque[float] = field(default_factory=deque)
    last_step_at: float = -math.inf
    state: str = "starting"
    why: str = ""
    proposals: dict[str, Proposal] = field(default_factory=dict)
    _said: Said = field(default_factory=Said)

    def _mem(self, tier: str) -> _Tier:
        return self.tiers.setdefault(tier, _Tier())

    def _note(self, state: str, why: str) -> None:
        """The guard's current state; logged when it changes (a frozen guard says so once, not every second)."""
        self.state, self.why = state, why
        line = f"{state}: {why}" if why else state
        if self._said.changed(state, line):  # a lasting state once, an action each time (guard/voice.py)
            self.say(line)

    # ----- the loop's one look
    async def step(self, obs: Observation) -> None:
        if why := obs.frozen or signals.silence(self.policy, obs):
            self.sustain.reset()
            self._note("frozen", why + "; no action")
            await self._publish(obs)
            return
        self.sustain.update(self.policy, obs)
        if self.board is not None and self.mode == "propose" and not self.dry_run:
            await self._read_proposals(obs)
        self._track(obs)
        if self.board is not None and self.mode == "propose" and not self.dry_run:
            await self._withdraw_stale(obs)
        exceeded, calm_s = self.sustain.exceeded(self.policy, obs), self.sustain.calm_for(obs)
        if exceeded:
            await self._shed(obs, exceeded)
        elif calm_s is not None and calm_s >= self.policy.hold_s:
            await self._give_back(obs)
        else:
            self._note("watching", self._summary(obs))
        if self.mode == "auto" and not self.dry_run:
            await self._renew(obs)
        await self._publish(obs)

    def _summary(self, obs: Observation) -> str:
        return ", ".join(f"{describe(r)} {fmt(r, obs.values[r.name])}" for r in self.policy.signals
                         if r.name in obs.values)

    def _own(self, tier: str, q: Quota) -> bool:
        """Is the tier's quota a step of this guard (written by it, or its proposal accepted)?"""
        if q.updated_by == self.actor:
            return True
        p = self.proposals.get(tier)
        return p is not None and q.expires_at is not None and q.settings() == p.spec

    def _track(self, obs: Observation) -> None:
        """Notice changes made by others: an operator's change wins for the cool-down."""
        for tier in self.policy.order:
            t = obs.tiers.get(tier)
            q = t.quota if t is not None else None
            if q is None:
                continue
            mem = self._mem(tier)
            first = mem.seen_version is None
            if mem.seen_version is not None and q.version <= mem.seen_version:
                continue  # versions only grow: an older figure is a poll from before a write
            mem.seen_version = q.version
            if self._own(tier, q):
                if mem.original is None and tier in self.proposals:
                    mem.original = self.proposals[tier].old_spec
                continue
            if q.updated_by == EXPIRED_BY or (q.expires_at is None and q.updated_by in SYSTEM_ACTORS):
                mem.original, mem.lapsing = None, False  # back to its own quota
                continue
            mem.original, mem.lapsing = None, False
            recent = not first or self.wall() - q.updated_at < self.policy.cooldown_s
            if recent:
                mem.held_until = obs.at + self.policy.cooldown_s
                self.say(f"{tier} was changed by {q.updated_by} (now {label(q)}, version {q.version}): the guard "
                         f"leaves it alone for {self.policy.cooldown_s:g} s")

    async def _read_proposals(self, obs: Observation) -> None:
        assert self.board is not None
        try:
            found = await self.board.proposals(self.policy.order)
        except Exception as e:  # the board is a convenience: the traffic figures already vouch for Redis
            log.warning("cannot read the guard's proposals: %s", e)
            return
        for tier, mine in list(self.proposals.items()):
            p = found.get(tier)
            if p is None or p.id != mine.id:
                if mine.state == "open":
                    self.say(f"proposal {mine.id} ({tier} -> {label(mine.spec)}) ended unanswered")
                del self.proposals[tier]
            elif p.state != mine.state:
                self.proposals[tier] = p
                if p.state == "dismissed":
                    self._mem(tier).held_until = obs.at + self.policy.cooldown_s
                    self.say(f"proposal {p.id} dismissed by {p.by}: {tier} is left alone for "
                             f"{self.policy.cooldown_s:g} s")
                elif p.state == "accepted":
                    self.changes.append(obs.at)
                    self.last_step_at = obs.at  # the operator took the step now: the step interval runs from here
                    self.say(f"proposal {p.id} accepted by {p.by}: {tier} is {label(p.spec)} (version "
                             f"{p.result_version})")

    async def _withdraw_stale(self, obs: Observation) -> None:
        """Withdraw this guard's open proposals whose reason no longer holds: a shed while no signal is above
        its target any more, a give-back while a signal is above its release level again. An operator must
        never be asked to accept a step for a fleet the guard itself reports as fine (or as hot again)."""
        assert self.board is not None
        above = [r for r in self.policy.signals if r.name in self.sustain.above_since]
        for tier, p in list(self.proposals.items()):
            if p.state != "open":
                continue
            if p.kind == "shed" and not above:
                gone = "no signal is above its target now (" + self._summary(obs) + ")"
            elif p.kind == "give_back" and self.sustain.calm_since is None:
                gone = "a signal is above its release level again (" + self._summary(obs) + ")"
            else:
                continue
            try:
                await self.board.withdraw(tier)
            except Exception as e:  # still open on the board: the next look tries again
                log.warning("cannot withdraw proposal %s: %s", p.id, e)
                continue
            del self.proposals[tier]
            self.say(f"proposal {p.id} ({tier} -> {label(p.spec)}) withdrawn: {gone}")

    # ----- bounds
    def _budget_left(self, now: float) -> int:
        while self.changes and now - self.changes[0] >= 3600:
            self.changes.popleft()
        return self.policy.max_changes_per_hour - len(self.changes)

    def _may_step(self, obs: Observation, what: str) -> bool:
        if obs.at - self.last_step_at < self.policy.cooldown_s:
            left = self.policy.cooldown_s - (obs.at - self.last_step_at)
            # "waiting", not "cooling": the word is about the guard's step interval, and next to a hot fleet
            # "cooling" read as a claim about the GPUs
            self._note("waiting", f"{what}; next step possible in {left:.0f} s")
            return False
        if self._budget_left(obs.at) <= 0:
            self._note("budget", f"{what}; {self.policy.max_changes_per_hour} changes in the last hour: "
                       "the guard only watches until the oldest is an hour old")
            return False
        if any(p.state == "open" for p in self.proposals.values()):
            self._note("proposed", f"{what}; waiting for an operator to accept or dismiss the proposal")
            return False
        return True

    def _share(self, exceeded: list[tuple[SignalRule, float, float]]) -> float:
        """The share of the fleet's admitted load to shed: the worst signal's excess (`excess_share`)."""
        worst = max(excess_share(rule, value, self.policy) for rule, value, _ in exceeded)
        p = self.policy
        return min(p.max_shed_pct, max(p.min_shed_pct, 100.0 * worst)) / 100.0

    # ----- shedding
    async def _shed(self, obs: Observation, exceeded: list[tuple[SignalRule, float, float]]) -> None:
        signals = exceeded_text(exceeded, obs)  # a saturated serving signal says why
        if not self._may_step(obs, signals):
            return
        share = self._share(exceeded)
        skipped: list[str] = []
        for tier in self.policy.order:
            t = obs.tiers.get(tier)
            q = t.quota if t is not None else None
            mem = self._mem(tier)
            if t is None or q is None:
                skipped.append(f"{tier}: no quota")
                continue
            if obs.at < mem.held_until:
                skipped.append(f"{tier}: left alone (changed by {q.updated_by})")
                continue
            if q.paused:
                skipped.append(f"{tier}: paused")
                continue
            rule = self.policy.tiers[tier]
            floor = rule.floor_in(q.window_s)
            if q.limit <= floor if rule.lever == "limit" else at_cap_floor(q, rule):
                skipped.append(f"{tier}: at its floor {label(q)}")
                continue
            if t.accepted_rps <= 0:
                skipped.append(f"{tier}: admits nothing")
                continue
            try:
                if rule.lever == "cap":
                    cap = shed_cap(q, rule, t.accepted_rps, share * obs.admitted_rps())
                    if cap is None:
                        skipped.append(f"{tier}: at its floor {label(q)}")
                        continue
                    spec = replace(q.settings(), tier_cap_rps=cap)
                    impact = await self.store.preview(tier, spec, minutes=self.policy.preview_minutes)
                else:
                    fraction = min(1.0, share * obs.admitted_rps() / t.accepted_rps)
                    lowest = min(q.limit - 1, max(floor, math.floor(q.limit * (1.0 - rule.step_pct / 100.0))))
                    limit, impact = await self._search(tier, q, lowest, fraction)
                    spec = replace(q.settings(), limit=limit)
            except (Unreachable, BrokenQuota, QuotaError, OSError) as e:
                self._note("error", f"what-if of {tier} failed: {e}")
                return
            if impact.would_refuse <= 0:
                skipped.append(f"{tier}: {label(spec)} would refuse nothing")
                continue
            shadow = " (shadow mode: counted, not refused)" if q.mode == "shadow" else ""
            reason = (f"{signals}; {label(spec)} would have refused {impact.would_refuse:,} of "
                      f"{impact.total_admitted:,} {tier} requests in {self.policy.preview_minutes} min{shadow}")
            await self._act(obs, tier, q, spec, reason, "shed")
            return
        self._note("nothing to shed", f"{signals}; " + "; ".join(skipped))

    async def _search(self, tier: str, q: Quota, lowest: int, fraction: float) -> tuple[int, Any]:
        """The highest limit in [lowest, current) whose what-if refuses at least `fraction` of the tier's
        admitted requests (else `lowest`); what-ifs are monotonic in the limit, so a binary search."""
        cache: dict[int, Any] = {}

        async def impact(limit: int) -> Any:
            if limit not in cache:
                cache[limit] = await self.store.preview(
                    tier, replace(q.settings(), limit=limit), minutes=self.policy.preview_minutes)
            return cache[limit]

        def enough(i: Any) -> bool:
            return i.total_admitted > 0 and i.would_refuse >= fraction * i.total_admitted

        lo, hi = lowest, q.limit - 1
        if not enough(await impact(lo)):
            return lo, await impact(lo)
        while lo < hi:  # invariant: enough(lo)
            mid = (lo + hi + 1) // 2
            if enough(await impact(mid)):
                lo = mid
            else:
                hi = mid - 1
        return lo, await impact(lo)

    # ----- giving back
    async def _give_back(self, obs: Observation) -> None:
        calm = self.sustain.calm_for(obs) or 0.0  # step() gives back only when calm: never None here
        below = ", ".join(f"{describe(r)} {fmt(r, obs.values[r.name])} < {fmt(r, r.release)}"
                          for r in self.policy.signals if r.name in obs.values)
        what = f"below release for {calm:.0f} s ({below})"
        candidates = []
        for tier in reversed(self.policy.order):
            t = obs.tiers.get(tier)
            q = t.quota if t is not None else None
            mem = self._mem(tier)
            if t is None or q is None or q.expires_at is None or not self._own(tier, q) or obs.at < mem.held_until:
                continue
            if mem.lapsing:
                continue
            candidates.append((tier, t, q, mem))
        if not candidates:
            self._note("watching", what)
            return
        if not self._may_step(obs, what):
            return
        for tier, t, q, mem in candidates:
            original = mem.original or await self._recover_original(tier)
            mem.original = original
            pct = self.policy.give_back_pct
            if self.policy.tiers[tier].lever == "cap":
                room = headroom_share(self.policy, self.sustain.heading(self.policy, obs)) * obs.admitted_rps()
                cap = give_back_cap(q, original, t.accepted_rps + t.rejected_rps, pct, room)
                spec = None if cap is None else replace(q.settings(), tier_cap_rps=cap)
            else:
                nxt = max(q.limit + 1, math.floor(q.limit * (1.0 + pct / 100.0)))
                lapse = original is None or nxt >= original.limit or original.window_s != q.window_s
                spec = None if lapse else replace(q.settings(), limit=nxt)
            if spec is None:
                mem.lapsing = True
                back = f" (back to {label(original)})" if original is not None else ""
                self.say(f"gives {tier} back: its override at {label(q)} lapses at {iso(q.expires_at)}{back}; "
                         f"{what}")
                continue
            try:
                impact = await self.store.preview(tier, spec, minutes=self.policy.preview_minutes)
            except (Unreachable, BrokenQuota, QuotaError, OSError) as e:
                self._note("error", f"what-if of {tier} failed: {e}")
                return
            reason = (f"fleet {what}; gives {tier} back {label(q)} -> {label(spec)}, which would have refused "
                      f"{impact.would_refuse:,} of {impact.total_admitted:,} {tier} requests in "
                      f"{self.policy.preview_minutes} min")
            await self._act(obs, tier, q, spec, reason, "give_back")
            return
        self._note("watching", what)

    async def _recover_original(self, tier: str) -> QuotaSpec | None:
        """After a restart: the quota before this guard's run of overrides, from the audit history."""
        try:
            entries = await self.store.history(tier, count=50)
        except Exception:  # no history: the override lapses by itself
            return None
        original = None
        for e in entries:  # newest first
            if e.actor != self.actor:
                break
            original = e.old.settings() if e.old is not None else None
        return original

    # ----- writing
    async def _act(self, obs: Observation, tier: str, q: Quota, spec: QuotaSpec, reason: str, kind: str) -> None:
        verb = "shed" if kind == "shed" else "give back"
        mem = self._mem(tier)
        self.last_step_at = obs.at
        if self.dry_run:
            self._note("dry run", f"would {verb} {tier}: {label(q)} -> {label(spec)} for {self.policy.override_s} s; "
                       f"{reason}")
            return
        if self.mode == "propose":
            p = Proposal(new_id(tier, self.wall()), tier, kind, spec, q.settings(), self.policy.override_s,
                         q.version, reason, self.actor, self.wall())
            if self.board is not None:
                try:
                    await self.board.propose(p, self.policy.proposal_ttl_s)
                except Exception as e:
                    self._note("error", f"cannot publish the proposal: {e}")
                    return
            self.proposals[tier] = p
            self._note("proposed", f"proposes {tier}: {label(q)} -> {label(spec)} ({p.id}); {reason}")
            return
        try:
            new = await self.store.set(tier, spec, actor=self.actor, reason=reason[:500], expect_version=q.version,
                                       for_s=self.policy.override_s)
        except Conflict as e:
            cur = e.current
            who = cur.updated_by if cur is not None else "someone"
            if cur is not None and cur.updated_by != self.actor:
                mem.held_until = obs.at + self.policy.cooldown_s
                mem.seen_version = cur.version
            self._note("conflict", f"{tier} was changed by {who} meanwhile: not retried; the guard re-reads it and "
                       f"leaves it alone for {self.policy.cooldown_s:g} s")
            return
        except (Unreachable, BrokenQuota, QuotaError, OSError) as e:
            self._note("error", f"cannot set {tier}: {e}")
            return
        if mem.original is None and not self._own(tier, q):
            mem.original = q.settings()
        mem.seen_version, mem.lapsing = new.version, False
        self.changes.append(obs.at)
        self._note("acted", f"{verb} {tier}: {label(q)} -> {label(new)} until {iso(new.expires_at)} (version "
                   f"{new.version}); {reason}")

    async def _renew(self, obs: Observation) -> None:
        """Renew this guard's overrides that end within a third of their length, while it still holds them."""
        for tier in self.policy.order:
            t = obs.tiers.get(tier)
            q = t.quota if t is not None else None
            mem = self._mem(tier)
            if q is None or q.expires_at is None or q.updated_by != self.actor or mem.lapsing:
                continue
            if q.expires_at - self.wall() > self.policy.override_s / 3:
                continue
            try:
                new = await self.store.set(tier, q.settings(), actor=self.actor, expect_version=q.version,
                                           for_s=self.policy.override_s,
                                           reason=f"guard keeps {tier} at {label(q)} ({self._summary(obs)})"[:500])
            except Conflict:
                continue  # someone changed it: the next look sees who
            except (Unreachable, BrokenQuota, QuotaError, OSError) as e:
                self._note("error", f"cannot renew {tier}: {e}")
                continue
            mem.seen_version = new.version
            self.say(f"renewed {tier} at {label(new)} until {iso(new.expires_at)}")

    async def _publish(self, obs: Observation) -> None:
        if self.board is None:
            return
        status = {
            "actor": self.actor, "mode": self.mode, "dry_run": self.dry_run, "state": self.state, "why": self.why,
            "at": self.wall(), "values": {k: round(v, 1) for k, v in obs.values.items()},
        }
        try:
            await self.board.put_status(status, int(max(5.0, 3 * self.policy.interval_s)))
        except Exception as e:  # the console then says "no guard": the guard itself goes on
            if self._said.fault(str(e)):
                log.warning("cannot publish the guard's status: %s", e)
            return
        self._said.fault("")
