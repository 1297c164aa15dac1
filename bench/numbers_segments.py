"""Micro-benchmark for pushgate.core.numbers and pushgate.core.segments.

Run:  .venv/bin/python bench/numbers_segments.py

Prints microseconds per call (best of several rounds) for:
* number_problem / region_of over 100,000 distinct valid numbers from several countries, next to
  phonenumbers.parse + is_valid_number over the same numbers (the baseline the module replaces);
* number_problem over random, mostly invalid, digit strings;
* count_segments / split_segments over typical message texts.

Not a test: numbers depend on the machine. It also re-checks, for free, that every generated
number is judged the same way by both implementations.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pushgate.core import numbers  # noqa: E402
from pushgate.core.numbers import number_problem, region_of  # noqa: E402
from pushgate.core.segments import count_segments, split_segments  # noqa: E402

REGIONS = ("IN", "BR", "US", "CA", "GB", "DE", "ID", "NG", "MX", "AE", "RU", "FR", "JM", "KZ")
TARGET = 100_000
ROUNDS = 5


def valid_numbers(count: int, seed: int = 1) -> list[str]:
    """Distinct numbers phonenumbers calls valid: example numbers with randomised tails."""
    rng = random.Random(seed)
    templates = []
    for region in REGIONS:
        for numtype in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, numtype)
            if example is not None:
                nsn = phonenumbers.national_significant_number(example)
                templates.append((str(example.country_code), nsn))
    found: set[str] = set()
    while len(found) < count:
        cc, nsn = rng.choice(templates)
        keep = max(len(nsn) - 5, 3)
        candidate = cc + nsn[:keep] + "".join(rng.choices("0123456789", k=len(nsn) - keep))
        if candidate in found:
            continue
        if phonenumbers.is_valid_number(phonenumbers.parse("+" + candidate)):
            found.add(candidate)
    out = sorted(found)
    rng.shuffle(out)
    return out


def per_call_us(fn: Callable[[str], object], items: Sequence[str]) -> float:
    """Best-of-ROUNDS microseconds per call of fn over items."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def phonenumbers_valid(number: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + number))
    except phonenumbers.NumberParseException:
        return False


def bench_numbers() -> None:
    print(f"generating {TARGET:,} distinct valid numbers from {', '.join(REGIONS)} ...")
    valid = valid_numbers(TARGET)
    rng = random.Random(2)
    junk = [
        rng.choice("123456789") + "".join(rng.choices("0123456789", k=rng.randint(6, 14)))
        for _ in range(TARGET)
    ]

    start = time.perf_counter()
    for prefix in {n[:3] for n in valid}:
        number_problem(prefix + "0000000")  # builds the table of that calling code
    first_use_ms = (time.perf_counter() - start) * 1e3

    # Agreement check on exactly the benchmarked inputs.
    assert all(number_problem(n) is None for n in valid)
    # Agreement with phonenumbers except where pushgate differs on purpose (core/numbers.py):
    # a number phonenumbers accepts only by stripping a national prefix is refused.
    mismatch = sum((number_problem(n) is None) != phonenumbers_valid(n)
                   and "national prefix" not in (number_problem(n) or "") for n in junk)
    assert mismatch == 0, mismatch

    pn_parse = per_call_us(phonenumbers_valid, valid[:20_000])  # slow: a sample is enough
    ours = per_call_us(number_problem, valid)
    region = per_call_us(region_of, valid)
    junk_ours = per_call_us(number_problem, junk)
    junk_pn = per_call_us(phonenumbers_valid, junk[:20_000])
    built = sum(isinstance(t, numbers._CallingCode) for t in numbers._TABLES.values())

    print(f"  table build on first use, {built} calling codes: {first_use_ms:8.1f} ms total")
    print(f"  number_problem, valid numbers        : {ours:8.2f} us/call")
    print(f"  region_of, valid numbers             : {region:8.2f} us/call")
    print(f"  phonenumbers parse+is_valid, valid   : {pn_parse:8.2f} us/call")
    print(f"    -> speed-up                        : {pn_parse / ours:8.1f} x")
    print(f"  number_problem, random digit strings : {junk_ours:8.2f} us/call")
    print(f"  phonenumbers parse+is_valid, random  : {junk_pn:8.2f} us/call")
    print(f"  10,000-recipient request, ours       : {ours * 10_000 / 1e3:8.2f} ms")


TEXTS = {
    "short ASCII (52)": "Your OTP is 482913. It expires in 10 minutes. -ACME",
    "ASCII 160 (1 seg)": ("Hello John, your order #12345 has shipped. " * 4)[:160],
    "ASCII + € [] (100)": ("Total: 10€ [paid] {ref ABC} " * 4)[:100],
    "ASCII 459 (3 segs)": ("Reminder: your appointment is tomorrow at 10:30. " * 10)[:459],
    "ASCII+ext 520 (4)": "Order #12345 shipped [ok] {tracking} ~ 10€ | thanks. " * 10,
    "accented GSM (66)": "Hallå Søren! Ñoño Über café à la carte: £5 or ¥700 ¿ok? ÆØÅ Ωmega",
    "Portuguese UCS-2 (48)": "Olá João, sua encomenda já está a caminho. Obrigado",
    "Cyrillic (45)": "Привет, Иван! Ваш заказ №12345 отправлен. Спасибо",
    "Hindi (60)": "नमस्ते! आपका ओटीपी 482913 है। यह 10 मिनट में समाप्त होगा।",
    "emoji mix (35)": "Happy birthday 🎉🎂! Enjoy 20% off today 😀",
    "emoji UCS-2 400 (7)": "Sale 🎉 up to 50% off, today only! 😀 " * 12,
}


def bench_segments() -> None:
    print("count_segments / split_segments (us/call):")
    width = max(map(len, TEXTS))
    for name, text in TEXTS.items():
        reps = [text] * 20_000
        count = count_segments(text)
        c = per_call_us(count_segments, reps)
        s = per_call_us(split_segments, reps)
        print(
            f"  {name:<{width}}  {count.encoding} {count.units:4d} units "
            f"{count.segments} seg  count {c:6.2f}  split {s:6.2f}"
        )


def main() -> None:
    print(f"Python {sys.version.split()[0]}, phonenumbers {phonenumbers.__version__}")
    bench_numbers()
    bench_segments()


if __name__ == "__main__":
    main()
