"""A load generator for the OVN SB: many load balancers and a steady stream of
transactions (backends added/removed, LBs created/deleted), through the ovs
IDL like any other OVSDB client.  It keeps the expected final state."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ovs.db.idl
from ovsdbapp.backend.ovs_idl import idlutils


def vip_of(i: int) -> str:
    return f"172.{16 + i // 65536}.{i // 256 % 256}.{i % 256}:80"


def backend_pool(i: int) -> list[str]:
    return [f"10.{100 + b}.{i // 256 % 256}.{i % 256}:8080" for b in range(8)]


@dataclass
class Churn:
    remote: str
    datapath: str  # Datapath_Binding uuid the LBs are attached to
    seed: int = 1
    expected: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name->(vip, bes)
    commit_times: list[float] = field(default_factory=list)
    _idl: Any = None
    _uuids: dict[str, uuid.UUID] = field(default_factory=dict)  # LB name -> row uuid
    _next: int = 0

    def connect(self) -> None:
        helper = idlutils.get_schema_helper(self.remote, "OVN_Southbound")
        helper.register_table("Load_Balancer")
        helper.register_table("Datapath_Binding")
        self._idl = ovs.db.idl.Idl(self.remote, helper, leader_only=True)
        deadline = time.monotonic() + 20
        while self._idl.state != ovs.db.idl.Idl.IDL_S_MONITORING:
            self._idl.run()
            if time.monotonic() > deadline:
                raise TimeoutError("SB not reachable")
            time.sleep(0.01)
        self._rng = random.Random(self.seed)

    def _commit(self, fill: Any) -> None:
        txn = ovs.db.idl.Transaction(self._idl)
        self._inserted: list[tuple[str, Any]] = []
        fill(txn)
        status = txn.commit_block()
        if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
            raise RuntimeError(f"SB transaction failed: {status} {txn.get_error()}")
        self.commit_times.append(time.time())
        for name, row in self._inserted:
            self._uuids[name] = txn.get_insert_uuid(row.uuid)

    def _dp_row(self) -> Any:
        return self._idl.tables["Datapath_Binding"].rows[uuid.UUID(self.datapath)]

    def create(self, count: int, batch: int = 200) -> None:
        """``count`` LBs of 3 backends each, ``batch`` per transaction."""
        while count > 0:
            n = min(batch, count)

            def fill(txn: Any, n: int = n) -> None:
                for _ in range(n):
                    self._insert(txn)

            self._commit(fill)
            count -= n

    def _insert(self, txn: Any) -> None:
        i = self._next
        self._next += 1
        name = f"churn-{i}"
        bes = backend_pool(i)[:3]
        row = txn.insert(self._idl.tables["Load_Balancer"])
        row.name = name
        row.protocol = ["tcp"]
        row.vips = {vip_of(i): ",".join(bes)}
        row.options = {"distribution": "ovs-default"}
        row.datapaths = [self._dp_row()]
        self.expected[name] = (vip_of(i), bes)
        self._inserted.append((name, row))

    def step(self) -> None:
        """One transaction: 80 % change a backend set, 10 % create, 10 % delete."""
        roll = self._rng.random()
        if roll < 0.1 or not self.expected:
            self._commit(self._insert)
            return
        name = self._rng.choice(sorted(self.expected))
        row = self._row(name)
        if row is None:
            return
        if roll < 0.2:
            self._commit(lambda txn: row.delete())
            del self.expected[name], self._uuids[name]
            return
        vip, bes = self.expected[name]
        pool = backend_pool(int(name.split("-")[1]))
        new = sorted(set(bes) ^ {self._rng.choice(pool)}) or bes

        def fill(txn: Any) -> None:
            row.vips = {vip: ",".join(new)}

        self._commit(fill)
        self.expected[name] = (vip, new)

    def _row(self, name: str) -> Any:
        return self._idl.tables["Load_Balancer"].rows.get(self._uuids.get(name))

    def run(self, rate: float, seconds: float) -> int:
        """``rate`` transactions per second for ``seconds``; returns how many."""
        start = time.monotonic()
        done = 0
        while (now := time.monotonic()) - start < seconds:
            due = start + done / rate
            if now < due:
                time.sleep(due - now)
            self.step()
            done += 1
        return done

    def close(self) -> None:
        if self._idl is not None:
            self._idl.close()
