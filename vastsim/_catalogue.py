"""A deterministic catalogue of simulated Vast.ai machines and their offers.

The same seed gives the same machines, offers and ids (dates are relative to the moment the
catalogue is built). Units are those of the real offer API (reference ``vast-api.md`` §3):
``gpu_ram`` MB per GPU as the driver reports it, ``cpu_ram`` MB for the whole host,
``disk_space`` GB, ``inet_*`` Mbit/s, ``*_cost`` $/GB, ``dph_*`` $/hour, ``storage_cost``
$/GB/month, dates in epoch seconds. Prices that depend on the search (``dph_total``,
``storage_total_cost``, the per-dollar ratios, ``score``) are computed by :func:`priced_row`.

Limits: the numbers are plausible, not measured; ``public_ipaddr`` is always the loopback
address (nothing may dial out of this simulator); every GPU is an NVIDIA one.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

# name, MB per GPU as reported, TFLOPS per GPU, GB/s memory bandwidth, compute capability x100,
# $/GPU/hour, TDP W, GPU counts seen, weight in the marketplace, datacenter-class card.
_GPUS: tuple[tuple[str, int, float, float, int, float, int, tuple[int, ...], int, bool], ...] = (
    ("RTX 3060", 12288, 12.7, 360.0, 860, 0.06, 170, (1, 2, 4), 8, False),
    ("RTX 3070", 8192, 20.3, 448.0, 860, 0.08, 220, (1, 2, 4, 8), 5, False),
    ("RTX 3080", 10240, 29.8, 760.0, 860, 0.10, 320, (1, 2, 4, 8), 7, False),
    ("RTX 3080 Ti", 12288, 34.1, 912.0, 860, 0.13, 350, (1, 2, 4), 4, False),
    ("RTX 3090", 24576, 35.6, 936.0, 860, 0.20, 350, (1, 2, 4, 8), 12, False),
    ("RTX 4070", 12282, 29.1, 504.0, 890, 0.12, 200, (1, 2, 4), 5, False),
    ("RTX 4080", 16376, 48.7, 717.0, 890, 0.22, 320, (1, 2, 4, 8), 6, False),
    ("RTX 4090", 24564, 82.6, 1008.0, 890, 0.35, 450, (1, 2, 4, 8), 16, False),
    ("RTX A4000", 16376, 19.2, 448.0, 860, 0.12, 140, (1, 2, 4, 8), 4, False),
    ("RTX A5000", 24564, 27.8, 768.0, 860, 0.20, 230, (1, 2, 4, 8), 5, True),
    ("RTX A6000", 49140, 38.7, 768.0, 860, 0.45, 300, (1, 2, 4, 8), 5, True),
    ("Tesla T4", 15360, 8.1, 320.0, 750, 0.10, 70, (1, 2, 4), 3, True),
    ("Tesla V100", 16384, 15.7, 900.0, 700, 0.25, 300, (1, 2, 4, 8), 3, True),
    ("A10", 23028, 31.2, 600.0, 860, 0.25, 150, (1, 2, 4), 3, True),
    ("A40", 46068, 37.4, 696.0, 860, 0.40, 300, (1, 2, 4, 8), 3, True),
    ("L40S", 46068, 91.6, 864.0, 890, 0.75, 350, (1, 2, 4, 8), 4, True),
    ("A100 PCIE", 40960, 19.5, 1555.0, 800, 0.80, 250, (1, 2, 4, 8), 4, True),
    ("A100 SXM4", 81920, 19.5, 2039.0, 800, 1.10, 400, (1, 2, 4, 8), 5, True),
    ("H100 PCIE", 81559, 51.2, 2000.0, 900, 1.80, 350, (1, 2, 4, 8), 4, True),
    ("H100 SXM", 81559, 66.9, 3350.0, 900, 2.20, 700, (1, 2, 4, 8), 6, True),
    ("H200", 143771, 66.9, 4800.0, 900, 3.00, 700, (1, 8), 2, True),
)

# "City, CC": most end in a two-letter country code; one spells the country out, one has no
# city (both forms appear in Vast's own answers).
_REGIONS: tuple[str, ...] = (
    "Washington, US", "California, US", "Texas, US", "Virginia, US", "Oregon, US", "Ohio, US",
    ", US", "Quebec, CA", "Ontario, CA", "Hong Kong, HK", "Bavaria, DE", "Hesse, DE",
    "North Holland, NL", "England, GB", "Stockholm, SE", "Ile-de-France, FR", "Tokyo, JP",
    "Seoul, KR", "New South Wales, AU", "Sao Paulo, BR", "Mazovia, PL", "Singapore, SG",
    "Taipei, TW", "Uusimaa, FI", "Nevada, US", "California, United States",
)

_CPUS: tuple[tuple[str, str, int, float], ...] = (
    ("AMD EPYC 7543 32-Core Processor", "amd64", 64, 2.8),
    ("AMD EPYC 9654 96-Core Processor", "amd64", 192, 2.4),
    ("AMD Ryzen 9 5950X 16-Core Processor", "amd64", 32, 3.4),
    ("AMD Ryzen Threadripper PRO 5975WX", "amd64", 64, 3.6),
    ("Intel Xeon Gold 6248R", "amd64", 96, 3.0),
    ("Intel Core i9-13900K", "amd64", 32, 3.0),
    ("Intel Xeon Platinum 8480+", "amd64", 224, 2.0),
    ("Neoverse-V2", "arm64", 144, 3.1),
)

_DRIVERS: tuple[tuple[str, float], ...] = (
    ("535.183.01", 12.2), ("550.127.05", 12.4), ("560.35.03", 12.6), ("570.124.04", 12.8),
    ("575.57.08", 12.9),
)

_DISKS = ("Samsung SSD 980 PRO 2TB", "WD_BLACK SN850X 4000GB", "INTEL SSDPE2KX040T8",
          "Micron_7450_MTFDKCC7T6TFR", "KINGSTON SNV2S2000G")
_MOBOS = ("ROMED8-2T", "ASUS Pro WS WRX80E-SAGE SE WIFI", "H12SSL-i", "X13DEG-QT", "PRIME Z790-P")

OFFER_ID_BASE = 6_000_000
VOLUME_OFFER_ID_BASE = 30_000_000


def driver_number(version: str) -> int:
    """The integer Vast keeps for a driver version: "570.124.04" -> 570124004."""
    parts = (version.split(".") + ["0", "0"])[:3]
    return int("".join(p.zfill(3) for p in parts))


def geolocode(geolocation: str) -> int:
    """A stable integer for the country of a location (Vast hashes the code into ``geolocode``)."""
    tail = geolocation.rsplit(",", 1)[-1].strip()
    return zlib.crc32(tail.encode()) % 1_000_000


@dataclass
class Machine:
    """One simulated host.

    Attributes:
        machine_id: Vast's machine id.
        host_id: the id of the host (owner) of the machine.
        num_gpus: GPUs the machine has.
        free_gpus: GPUs not rented by an instance.
        online: False once the host "died" (fault injection).
        volume_offer_id: id of the machine's volume offer.
        volume_free_gb: GB still available for volumes.
        row: the fields every offer of this machine shares.
    """

    machine_id: int
    host_id: int
    num_gpus: int
    free_gpus: int
    volume_offer_id: int
    volume_free_gb: float
    row: dict[str, Any]
    online: bool = True


@dataclass
class Ask:
    """One offer ("ask") of some or all of a machine's GPUs.

    Attributes:
        row: the static fields of the offer (prices before storage).
        machine_id: the machine offered.
        rented_by_me: an instance of the simulator's user holds it.
        gone_status: 404 or 410 once "another user" rented it (fault injection), else None.
    """

    row: dict[str, Any]
    machine_id: int
    rented_by_me: bool = False
    gone_status: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.row["id"])

    @property
    def num_gpus(self) -> int:
        return int(self.row["num_gpus"])


def build_catalogue(seed: int = 0, machines: int = 130, now: float = 0.0) -> tuple[list[Machine], list[Ask]]:
    """Build the machines and offers of a simulated marketplace.

    Args:
        seed: the random seed; the same seed gives the same catalogue.
        machines: number of machines. Some multi-GPU machines also offer half of their GPUs,
            so the number of offers is about 1.2 times this (130 machines give ~155 offers).
        now: epoch seconds the dates are relative to.

    Returns:
        The machines and the offers, offers in id order.
    """
    rng = random.Random(seed)
    weights = [g[8] for g in _GPUS]
    machine_list: list[Machine] = []
    asks: list[Ask] = []
    next_offer = OFFER_ID_BASE + rng.randrange(100_000, 900_000)
    for index in range(machines):
        name, ram, tflops, bw, cc, price, tdp, counts, _, dc_card = rng.choices(_GPUS, weights)[0]
        n = rng.choice(counts)
        datacenter = rng.random() < (0.6 if dc_card else 0.12)
        verification = rng.choices(("verified", "unverified", "deverified"), (85, 12, 3))[0]
        reliability = round(1.0 - rng.betavariate(1.2, 30.0 if datacenter else 12.0), 4)
        cpu_name, cpu_arch, max_cores, ghz = rng.choice(_CPUS[:-1] if rng.random() < 0.96 else _CPUS)
        cores = min(max_cores, max(8, n * rng.choice((8, 12, 16, 24, 32))))
        host_ram_mb = rng.choice((64, 128, 256, 512, 1024, 2048)) * 1024
        host_ram_mb = max(host_ram_mb, n * 32 * 1024) if dc_card else host_ram_mb
        driver, cuda = rng.choice(_DRIVERS[1:] if cc >= 890 else _DRIVERS)
        geo = rng.choice(_REGIONS)
        disk_total = float(rng.choice((250, 500, 1000, 2000, 4000, 8000)))
        storage_cost = round(rng.uniform(0.05, 0.30), 4)
        machine_id = 10_000 + rng.randrange(0, 89_999)
        while any(m.machine_id == machine_id for m in machine_list):
            machine_id += 1
        host_id = 100_000 + rng.randrange(0, 899_999)
        inet_down = round(rng.uniform(80, 8000 if datacenter else 2000), 1)
        pci_gen = float(rng.choice((3, 4, 4, 5) if cc >= 890 else (3, 4)))
        price_factor = rng.uniform(0.75, 1.5) * (1.1 if datacenter else 1.0)
        start = now - rng.uniform(1, 400) * 86400
        end = now + rng.uniform(3, 180) * 86400
        common = {
            "machine_id": machine_id,
            "host_id": host_id,
            "gpu_name": name,
            "gpu_arch": "nvidia",
            "gpu_ram": ram,
            "gpu_mem_bw": bw,
            "compute_cap": cc,
            "cuda_max_good": cuda,
            "driver_version": driver,
            "driver_vers": driver_number(driver),
            "bw_nvlink": float(rng.choice((0, 300, 600, 900))) if dc_card and n > 1 else 0.0,
            "gpu_max_power": float(tdp),
            "gpu_max_temp": float(rng.choice((83, 85, 87, 90))),
            "gpu_display_active": False,
            "cpu_name": cpu_name,
            "cpu_arch": cpu_arch,
            "cpu_ghz": round(ghz + rng.uniform(-0.3, 0.6), 2),
            "cpu_ram": host_ram_mb,
            "has_avx": 0 if cpu_arch == "arm64" else 1,
            "disk_bw": round(rng.uniform(500, 7000), 1),
            "disk_name": rng.choice(_DISKS),
            "mobo_name": rng.choice(_MOBOS),
            "inet_up": round(inet_down * rng.uniform(0.3, 1.0), 1),
            "inet_down": inet_down,
            "inet_up_cost": round(rng.uniform(0.0, 0.02), 4),
            "inet_down_cost": round(rng.uniform(0.0, 0.02), 4),
            "direct_port_count": rng.choice((0, 10, 50, 100, 500, 1000)),
            "pci_gen": pci_gen,
            "pcie_bw": round({3.0: 12.0, 4.0: 24.0, 5.0: 48.0}[pci_gen] * rng.uniform(0.5, 1.05), 1),
            "storage_cost": storage_cost,
            "reliability": reliability,
            "reliability2": reliability,
            "expected_reliability": reliability,
            "verification": verification,
            "vericode": {"verified": 1, "unverified": 0, "deverified": 2}[verification],
            "rentable": rng.random() < 0.97,
            "is_bid": False,
            "static_ip": rng.random() < (0.8 if datacenter else 0.3),
            "vms_enabled": rng.random() < 0.2,
            "external": rng.random() < 0.04,
            "hosting_type": 1 if datacenter else 0,
            "geolocation": geo,
            "geolocode": geolocode(geo),
            "public_ipaddr": "127.0.0.1",
            "os_version": rng.choice(("20.04", "22.04", "24.04")),
            "cluster_id": None,
            "start_date": round(start, 3),
            "end_date": round(end, 3),
        }
        vol_offer = VOLUME_OFFER_ID_BASE + index
        machine = Machine(machine_id, host_id, n, n, vol_offer, round(disk_total * 0.5, 1), common)
        machine_list.append(machine)
        shares = [n] + ([n // 2] if n >= 2 and rng.random() < 0.35 else [])
        for share in shares:
            next_offer += rng.randrange(3, 400)
            frac = share / n
            base = round(price * share * price_factor, 4)
            row = dict(common)
            row.update({
                "id": next_offer,
                "ask_contract_id": next_offer,
                "bundle_id": next_offer + 500_000_000,
                "num_gpus": share,
                "gpu_frac": frac,
                "gpu_total_ram": ram * share,
                "total_flops": round(tflops * share, 3),
                "dlperf": round(tflops * share * rng.uniform(0.9, 1.25), 3),
                "cpu_cores": cores,
                "cpu_cores_effective": round(cores * frac, 1),
                "disk_space": round(disk_total * 0.5 * frac, 1),
                "dph_base": base,
                "min_bid": round(base * rng.uniform(0.35, 0.7), 4),
                "avail_vol_ask_id": vol_offer,
                "avail_vol_size": machine.volume_free_gb,
                "avail_vol_dph": round(storage_cost * machine.volume_free_gb / 720.0, 6),
            })
            asks.append(Ask(row=row, machine_id=machine_id))
    return machine_list, asks


def priced_row(ask: Ask, *, now: float, allocated_storage: float, offer_type: str) -> dict[str, Any]:
    """The offer as a search answers it, priced for ``allocated_storage`` GB and ``offer_type``.

    ``dph_total = dph_base + storage_cost * allocated_storage / 720`` (a month as 720 hours);
    for ``bid`` offers ``dph_total`` starts from ``min_bid`` instead and ``is_bid`` is true.
    ``duration`` is the seconds left until ``end_date``.
    """
    row = dict(ask.row)
    storage_total = row["storage_cost"] * allocated_storage / 720.0
    base = row["min_bid"] if offer_type == "bid" else row["dph_base"]
    total = base + storage_total
    row["storage_total_cost"] = round(storage_total, 6)
    row["dph_total"] = round(total, 6)
    row["is_bid"] = offer_type == "bid"
    row["flops_per_dphtotal"] = round(row["total_flops"] / total, 4) if total > 0 else 0.0
    row["dlperf_per_dphtotal"] = round(row["dlperf"] / total, 4) if total > 0 else 0.0
    row["score"] = round(row["dlperf_per_dphtotal"] * row["reliability"] ** 4, 4)
    row["duration"] = round(row["end_date"] - now, 3)
    row["rented"] = ask.rented_by_me
    return row


def volume_offer_row(machine: Machine, *, now: float, allocated_storage: float) -> dict[str, Any]:
    """The volume offer of ``machine`` as ``POST /api/v0/volumes/search/`` answers it."""
    c = machine.row
    return {
        "id": machine.volume_offer_id,
        "ask_contract_id": machine.volume_offer_id,
        "machine_id": machine.machine_id,
        "host_id": machine.host_id,
        "disk_space": machine.volume_free_gb,
        "storage_cost": c["storage_cost"],
        "storage_total_cost": round(c["storage_cost"] * allocated_storage / 720.0, 6),
        **{k: c[k] for k in ("disk_bw", "inet_up", "inet_down", "geolocation", "geolocode",
                             "reliability", "reliability2", "verification", "vericode", "cpu_arch",
                             "driver_version", "driver_vers", "cuda_max_good", "gpu_arch",
                             "has_avx", "pci_gen", "pcie_bw", "static_ip", "hosting_type",
                             "external", "os_version", "cluster_id", "start_date", "end_date")},
        "total_flops": 0.0,
        "duration": round(c["end_date"] - now, 3),
    }
