# SPDX-License-Identifier: MIT
"""A rule grammar learnt from the corpus, for hypothesis (issue 10).

Every corpus line is cut into header options (``[!] -s/-d/-i/-o/-p X``, ``[!] -f``),
match blocks (``-m NAME`` and its options) and a target block (``-j/-g NAME`` and
its options), together with the table and chain the line was written for. A
generated rule is a target block in its table and chain, up to three header
options and up to two match blocks, each block possibly mutated: an option
dropped, repeated, negated, its value swapped for another value the corpus gives
that option, or for a value that is out of range or malformed. So the rules are
mostly near-valid: the interesting border between what iptables accepts and what
it refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from tests.conformance import CorpusRule
from tests.iptables_oracle import restore_split

HEADER_FLAGS = {
    "-s": "-s", "--source": "-s", "--src": "-s", "-d": "-d", "--destination": "-d", "--dst": "-d",
    "-i": "-i", "--in-interface": "-i", "-o": "-o", "--out-interface": "-o", "-p": "-p", "--protocol": "-p",
}
FRAGMENT = ("-f", "--fragment")
MATCH = ("-m", "--match")
TARGET = ("-j", "--jump", "-g", "--goto")
IMPLICIT = ("tcp", "udp", "icmp", "sctp", "dccp", "esp", "ah", "ipcomp", "icmpv6", "ipv6-icmp", "mh", "ipv6-mh")
#: Values no option takes as they are: negative, one past a limit, not a number, a reversed range.
BAD_VALUES = ("-1", "0", "65536", "4294967296", "18446744073709551616", "x", "1:0", "0x", "", "1/0", "255.255.255.256")

Option = tuple[str, ...]  # ("!"?, "--name", values...)


@dataclass(frozen=True, slots=True)
class Block:
    """``-m NAME`` / ``-j NAME`` / ``-g NAME`` and its options."""

    flag: str
    name: str
    options: tuple[Option, ...]

    def words(self) -> list[str]:
        return [self.flag, self.name, *(w for o in self.options for w in o)]


@dataclass(frozen=True, slots=True)
class TargetSite:
    table: str
    chain: str
    block: Block | None  # None: a rule without a target


@dataclass
class Grammar:
    headers: list[tuple[str, ...]] = field(default_factory=list)  # e.g. ("!", "-s", "192.0.2.0/24")
    matches: dict[str, list[Block]] = field(default_factory=dict)
    targets: list[TargetSite] = field(default_factory=list)
    values: dict[tuple[str, str], list[tuple[str, ...]]] = field(default_factory=dict)  # (ext, --opt) -> values

    def learn(self, rule: CorpusRule) -> None:
        header, blocks, target = split_rule(restore_split(rule.rule))
        if header is None:
            return
        for item in header:
            if item not in self.headers:
                self.headers.append(item)
        for block in blocks:
            known = self.matches.setdefault(block.name, [])
            if block not in known:
                known.append(block)
            self._values(block)
        if target is not None:
            self._values(target)
        site = TargetSite(rule.table, rule.chain, target)
        if site not in self.targets:
            self.targets.append(site)

    def _values(self, block: Block) -> None:
        for option in block.options:
            name = option[1] if option[0] == "!" else option[0]
            values = option[2:] if option[0] == "!" else option[1:]
            known = self.values.setdefault((block.name, name), [])
            if values not in known:
                known.append(values)


def split_rule(words: Sequence[str]) -> tuple[list[tuple[str, ...]] | None, list[Block], Block | None]:
    """Header items, match blocks and the target block of a rule (None header: not learnable)."""
    header: list[tuple[str, ...]] = []
    blocks: list[Block] = []
    target: Block | None = None
    current: tuple[str, str, list[Option]] | None = None
    options: list[Option] = []
    protocol = ""
    bang = False

    def close() -> None:
        nonlocal current, target
        if current is None:
            return
        block = Block(current[0], current[1], tuple(current[2]))
        if block.flag in TARGET:
            target = block
        else:
            blocks.append(block)
        current = None

    i = 0
    while i < len(words):
        word = words[i]
        if word == "!":
            bang = True
            i += 1
            continue
        if word in HEADER_FLAGS and i + 1 < len(words):
            close()
            flag = HEADER_FLAGS[word]
            if flag == "-p":
                protocol = words[i + 1].lower()
            header.append((("!",) if bang else ()) + (flag, words[i + 1]))
            bang = False
            i += 2
            continue
        if word in FRAGMENT:
            close()
            header.append((("!",) if bang else ()) + ("-f",))
            bang = False
            i += 1
            continue
        if (word in MATCH or word in TARGET) and i + 1 < len(words):
            close()
            options = []
            current = ("-m" if word in MATCH else ("-g" if word in ("-g", "--goto") else "-j"), words[i + 1], options)
            bang = False
            i += 2
            continue
        if word.startswith("--") and len(word) > 2:
            if current is None:  # an option of the implicit protocol match: learn it as -m PROTO
                if protocol not in IMPLICIT:
                    return None, [], None
                options = []
                current = ("-m", protocol, options)
            values = []
            j = i + 1
            while j < len(words) and not words[j].startswith("--") and words[j] != "!" \
                    and words[j] not in HEADER_FLAGS and words[j] not in MATCH + TARGET + FRAGMENT:
                values.append(words[j])
                j += 1
            options.append((("!",) if bang else ()) + (word, *values))
            bang = False
            i = j
            continue
        return None, [], None  # something the grammar does not model (a stray word, -c, -t)
    close()
    return header, blocks, target


def build_grammar(rules: Iterable[CorpusRule], exclude: Iterable[tuple[str, str, str]] = ()) -> Grammar:
    skip = set(exclude)
    grammar = Grammar()
    for rule in rules:
        if rule.key not in skip:
            grammar.learn(rule)
    # host names and address lists make iptables resolve or multiply a rule: leave them to the corpus
    grammar.headers = [h for h in grammar.headers
                       if not (len(h) > 1 and h[-2] in ("-s", "-d") and ("," in h[-1] or h[-1][:1].isalpha()))]
    return grammar


def quote_word(word: str) -> str:
    """A word as iptables-restore reads it back (double quotes, backslash escapes)."""
    if word and not any(c in word for c in ' \t"\\\''):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(words: Iterable[str]) -> str:
    return " ".join(quote_word(w) for w in words)


@st.composite
def mutated(draw: st.DrawFn, block: Block, grammar: Grammar) -> Block:
    """The block as the corpus has it, or with one option changed."""
    options = list(block.options)
    how = draw(st.sampled_from(("keep", "keep", "drop", "repeat", "negate", "other-value", "bad-value", "add")))
    if how == "drop" and options:
        del options[draw(st.integers(0, len(options) - 1))]
    elif how == "repeat" and options:
        options.append(options[draw(st.integers(0, len(options) - 1))])
    elif how == "negate" and options:
        k = draw(st.integers(0, len(options) - 1))
        options[k] = options[k][1:] if options[k][0] == "!" else ("!", *options[k])
    elif how in ("other-value", "bad-value") and options:
        k = draw(st.integers(0, len(options) - 1))
        head = options[k][:2] if options[k][0] == "!" else options[k][:1]
        name = head[-1]
        if how == "other-value":
            values = draw(st.sampled_from(grammar.values.get((block.name, name)) or [()]))
        else:
            values = (draw(st.sampled_from(BAD_VALUES)),)
        options[k] = (*head, *values)
    elif how == "add":
        siblings = grammar.matches.get(block.name, []) if block.flag == "-m" else []
        extra = [o for b in siblings for o in b.options]
        if extra:
            options.append(draw(st.sampled_from(extra)))
    return Block(block.flag, block.name, tuple(options))


@st.composite
def generated_rules(draw: st.DrawFn, grammar: Grammar) -> CorpusRule:
    """(table, chain, rule): a target site, header options and match blocks from the corpus."""
    site = draw(st.sampled_from(grammar.targets))
    header = draw(st.lists(st.sampled_from(grammar.headers), max_size=3,
                           unique_by=lambda h: h[-2] if h[-1] != "-f" else "-f"))
    names = draw(st.lists(st.sampled_from(sorted(grammar.matches)), max_size=2))
    words: list[str] = [w for h in header for w in h]
    for name in names:
        block = draw(st.sampled_from(grammar.matches[name]))
        words += draw(mutated(block, grammar)).words()
    if site.block is not None:
        words += draw(mutated(site.block, grammar)).words()
    if not words:
        words = ["-j", "ACCEPT"]
    return CorpusRule(site.table, site.chain, render(words), 0, "generated")
