"""The procedural problems of ``python_code``: small function specs at five levels, with reference solutions.

A :class:`Family` is one kind of problem: the function's name and parameters, a one-sentence spec (with
``{k}``-style constants drawn per task, so the task space is large enough for a held-out split), a
trusted reference ``solve`` and an input generator ``draw``. The reference runs here, in our process, on
generated inputs only; the model's code never does.

Levels (measured on the embedded 135M model, docs/environments.md): 1 one expression; 2 one builtin or a
comprehension; 3 a loop with a condition; 4 grouping and counting; 5 small algorithms.

    python -c "from environments.code_tasks import FAMILIES; print(len(FAMILIES))"
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Args = tuple[Any, ...]


@dataclass(frozen=True)
class Family:
    name: str
    level: int
    params: str
    spec: str
    solve: Callable[..., Any]
    draw: Callable[[random.Random], Args]
    consts: Callable[[random.Random], dict[str, Any]] = field(default=lambda rng: {})


# ----- input generators -----
WORDS = ["apple", "banana", "cherry", "dog", "eagle", "fig", "grape", "house", "ice", "jungle", "kite", "lemon",
         "moon", "nest", "orange", "pear", "queen", "river", "sun", "tree", "umbrella", "violet", "water", "yak"]


def ints(rng: random.Random, lo: int = -20, hi: int = 20, min_len: int = 0, max_len: int = 7) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(min_len, max_len))]


def letters(rng: random.Random, min_len: int = 0, max_len: int = 8, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))


def words(rng: random.Random, min_len: int = 0, max_len: int = 5) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]


def sentence(rng: random.Random) -> str:
    return " ".join(words(rng, 1, 5))


def small_dict(rng: random.Random, min_len: int = 0) -> dict[str, int]:
    return {w: rng.randint(-5, 10) for w in words(rng, min_len, 5)}


def _k(lo: int, hi: int) -> Callable[[random.Random], dict[str, Any]]:
    return lambda rng: {"k": rng.randint(lo, hi)}


# ----- reference solutions that need more than a lambda -----
def _fizzbuzz(n: int) -> str:
    return "FizzBuzz" if n % 15 == 0 else "Fizz" if n % 3 == 0 else "Buzz" if n % 5 == 0 else str(n)


def _dedupe(xs: list[int]) -> list[int]:
    return list(dict.fromkeys(xs))


def _most_common(xs: list[int]) -> int:
    counts = Counter(xs)
    return min(counts, key=lambda x: (-counts[x], x))


def _run_length(s: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for ch in s:
        if out and out[-1][0] == ch:
            out[-1] = (ch, out[-1][1] + 1)
        else:
            out.append((ch, 1))
    return out


def _group_first(ws: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for w in ws:
        groups.setdefault(w[0], []).append(w)
    return groups


def _longest_run(xs: list[int]) -> int:
    best = run = 0
    for i, x in enumerate(xs):
        run = run + 1 if i and xs[i - 1] == x else 1
        best = max(best, run)
    return best


def _balanced(s: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def _primes(n: int) -> list[int]:
    return [p for p in range(2, n + 1) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _collatz(n: int) -> int:
    steps = 0
    while n != 1:
        n, steps = (n // 2 if n % 2 == 0 else 3 * n + 1), steps + 1
    return steps


def _caesar(s: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) if c.islower() else c for c in s)


def _second_largest(xs: list[int]) -> int:
    return sorted(set(xs))[-2]


def _distinct_ints(rng: random.Random) -> Args:
    xs = ints(rng, min_len=2)
    return (xs if len(set(xs)) >= 2 else [*xs, max(xs) + 1],)


FAMILIES: list[Family] = [
    # level 1: one expression
    Family("add", 1, "a, b", "returns the sum of a and b", lambda a, b: a + b,
           lambda r: (r.randint(-50, 50), r.randint(-50, 50))),
    Family("multiply", 1, "x", "returns x multiplied by {k}", lambda x, k: x * k, lambda r: (r.randint(-30, 30),), _k(2, 9)),
    Family("add_k", 1, "x", "returns x plus {k}", lambda x, k: x + k, lambda r: (r.randint(-30, 30),), _k(1, 20)),
    Family("square", 1, "x", "returns x squared", lambda x: x * x, lambda r: (r.randint(-30, 30),)),
    Family("is_even", 1, "n", "returns True if the integer n is even and False otherwise", lambda n: n % 2 == 0,
           lambda r: (r.randint(-40, 40),)),
    Family("to_upper", 1, "s", "returns the string s in upper case", lambda s: s.upper(), lambda r: (letters(r),)),
    Family("length", 1, "s", "returns the number of characters in the string s", lambda s: len(s), lambda r: (letters(r),)),
    Family("first", 1, "xs", "returns the first element of the non-empty list xs", lambda xs: xs[0],
           lambda r: (ints(r, min_len=1),)),
    Family("last_char", 1, "s", "returns the last character of the non-empty string s", lambda s: s[-1],
           lambda r: (letters(r, min_len=1),)),
    # level 2: one builtin or a comprehension
    Family("reverse", 2, "s", "returns the string s reversed", lambda s: s[::-1], lambda r: (letters(r),)),
    Family("largest", 2, "xs", "returns the largest number in the non-empty list xs", max, lambda r: (ints(r, min_len=1),)),
    Family("total", 2, "xs", "returns the sum of the numbers in the list xs", sum, lambda r: (ints(r),)),
    Family("count_char", 2, "s, c", "returns how many times the character c occurs in the string s",
           lambda s, c: s.count(c), lambda r: (letters(r, alphabet="abc"), r.choice("abc"))),
    Family("sort_numbers", 2, "xs", "returns a new list with the numbers of xs sorted from smallest to largest",
           sorted, lambda r: (ints(r),)),
    Family("positives", 2, "xs", "returns a list of the numbers in xs that are greater than 0, in their original order",
           lambda xs: [x for x in xs if x > 0], lambda r: (ints(r),)),
    Family("squares", 2, "xs", "returns a list with the square of each number in xs", lambda xs: [x * x for x in xs],
           lambda r: (ints(r),)),
    Family("count_above", 2, "xs", "returns how many numbers in the list xs are greater than {k}",
           lambda xs, k: sum(1 for x in xs if x > k), lambda r: (ints(r),), _k(-5, 10)),
    Family("abs_diff", 2, "a, b", "returns the absolute difference between the numbers a and b", lambda a, b: abs(a - b),
           lambda r: (r.randint(-50, 50), r.randint(-50, 50))),
    # level 3: a loop with a condition
    Family("fizzbuzz", 3, "n", "returns 'FizzBuzz' if n is divisible by 15, 'Fizz' if by 3, 'Buzz' if by 5, "
           "and otherwise n as a string", _fizzbuzz, lambda r: (r.randint(1, 100),)),
    Family("count_vowels", 3, "s", "returns the number of vowels (a, e, i, o, u) in the lowercase string s",
           lambda s: sum(ch in "aeiou" for ch in s), lambda r: (letters(r, max_len=12),)),
    Family("dedupe", 3, "xs", "returns xs without duplicates, keeping the first occurrence of each number in order",
           _dedupe, lambda r: (ints(r, -4, 4, max_len=9),)),
    Family("second_largest", 3, "xs", "returns the second largest distinct number in xs (xs has at least two distinct numbers)",
           _second_largest, _distinct_ints),
    Family("running_sum", 3, "xs", "returns a list whose i-th element is the sum of xs[0] through xs[i]",
           lambda xs: [sum(xs[: i + 1]) for i in range(len(xs))], lambda r: (ints(r),)),
    Family("is_palindrome", 3, "s", "returns True if the string s reads the same forwards and backwards, else False",
           lambda s: s == s[::-1], lambda r: ((lambda h: h + h[::-1][r.randint(0, 1):])(letters(r, max_len=4))
                                               if r.random() < 0.5 else letters(r, alphabet="ab"),)),
    Family("digit_sum", 3, "n", "returns the sum of the decimal digits of the non-negative integer n",
           lambda n: sum(int(d) for d in str(n)), lambda r: (r.randint(0, 99999),)),
    Family("capitalize_words", 3, "s", "returns s with the first letter of every space-separated word in upper case",
           lambda s: " ".join(w[:1].upper() + w[1:] for w in s.split(" ")), lambda r: (sentence(r),)),
    Family("keys_above", 3, "d", "returns a list of the keys of the dictionary d whose value is greater than {k}, in insertion order",
           lambda d, k: [key for key, v in d.items() if v > k], lambda r: (small_dict(r),), _k(-2, 6)),
    # level 4: grouping and counting
    Family("most_common", 4, "xs", "returns the number that occurs most often in the non-empty list xs "
           "(the smallest of them if several tie)", _most_common, lambda r: (ints(r, -3, 3, min_len=1, max_len=9),)),
    Family("merge_counts", 4, "a, b", "returns a new dictionary with every key of the dictionaries a and b, "
           "mapped to the sum of its values in a and b (a missing key counts as 0)",
           lambda a, b: {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}, lambda r: (small_dict(r), small_dict(r))),
    Family("run_length", 4, "s", "returns the run-length encoding of s as a list of (character, count) tuples",
           _run_length, lambda r: (letters(r, max_len=10, alphabet="aab"),)),
    Family("group_by_first", 4, "words", "returns a dictionary mapping each first letter to the list of words in "
           "words that start with it, in their original order", _group_first, lambda r: (words(r, 0, 6),)),
    Family("rotate", 4, "xs", "returns xs rotated right by {k} positions (the last {k} elements move to the front, "
           "wrapping around for short lists)", lambda xs, k: xs[-(k % len(xs)):] + xs[: -(k % len(xs))] if xs else [],
           lambda r: (ints(r),), _k(1, 4)),
    Family("char_counts", 4, "s", "returns a dictionary mapping each character of s to how many times it occurs",
           lambda s: dict(Counter(s)), lambda r: (letters(r, alphabet="abcd"),)),
    Family("chunks", 4, "xs", "splits xs into consecutive lists of {k} elements (the last may be shorter) and returns "
           "the list of them", lambda xs, k: [xs[i: i + k] for i in range(0, len(xs), k)], lambda r: (ints(r, max_len=9),),
           _k(2, 4)),
    # level 5: small algorithms
    Family("longest_run", 5, "xs", "returns the length of the longest run of equal adjacent numbers in xs (0 for an empty list)",
           _longest_run, lambda r: (ints(r, 0, 2, max_len=10),)),
    Family("flatten", 5, "xss", "returns one list with the elements of the lists in xss, in order",
           lambda xss: [x for xs in xss for x in xs], lambda r: ([ints(r, max_len=3) for _ in range(r.randint(0, 4))],)),
    Family("caesar", 5, "s", "returns s with every lowercase letter shifted {k} places forward in the alphabet "
           "(wrapping from z to a); other characters stay", _caesar, lambda r: (sentence(r),), _k(1, 25)),
    Family("balanced", 5, "s", "returns True if the brackets ()[]{{}} in s are balanced and properly nested, else False",
           _balanced, lambda r: (letters(r, max_len=8, alphabet="()[]{}"),)),
    Family("primes_up_to", 5, "n", "returns the list of prime numbers less than or equal to n, in increasing order",
           _primes, lambda r: (r.randint(0, 60),)),
    Family("collatz_steps", 5, "n", "returns how many steps the Collatz rule (n -> n/2 if even, else 3n+1) takes to reach 1 "
           "from the positive integer n", _collatz, lambda r: (r.randint(1, 60),)),
    Family("transpose", 5, "m", "returns the transpose of the rectangular matrix m (a list of equal-length rows)",
           lambda m: [list(row) for row in zip(*m, strict=True)] if m else [],
           lambda r: ((lambda w: [ints(r, -9, 9, w, w) for _ in range(r.randint(1, 3))])(r.randint(1, 3)),)),
]

LEVELS = sorted({f.level for f in FAMILIES})


def families(min_level: int, max_level: int) -> list[Family]:
    return [f for f in FAMILIES if min_level <= f.level <= max_level]
