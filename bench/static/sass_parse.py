"""Read SASS (nvdisasm's text of a cubin): instructions, loops, loads, MMAs, divisions.

Pure text processing, no GPU and no CUDA: bench/static/cubin_tools.py makes the text. Loops are
found from the code's own branches: a branch to an earlier address (a back edge) closes a
loop that runs from its target to the branch. The "main loop" of a kernel is the innermost
loop holding matrix instructions, or, in a kernel without any, the longest loop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# "        /*04f0*/              @!P0 BRA `(.L_x_0) ;"
_INSTRUCTION = re.compile(
    r"^\s*/\*(?P<address>[0-9a-f]+)\*/\s+(?P<predicate>@!?U?P[T0-9]+\s+)?"
    r"(?P<opcode>[A-Z][A-Za-z0-9_.]*)(?P<operands>[^;]*);")
_LABEL = re.compile(r"^\s*(?P<label>[.$\w]+):\s*$")
_TARGET = re.compile(r"`\((?P<label>[^)]+)\)")

# Matrix instructions: Hopper's warpgroup MMA, the warp-level MMA of sm_80, and the
# integer and double ones (named so they are not mistaken for plain FFMA code).
MMA_OPCODES = ("HGMMA", "HMMA", "IGMMA", "IMMA", "QGMMA", "DMMA")
GLOBAL_LOADS = ("LDG", "LDGSTS", "UTMALDG", "LD")
GLOBAL_STORES = ("STG", "UTMASTG", "ST", "RED", "ATOMG")
_BRANCHES = ("BRA", "JMP")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # with its modifiers: LDG.E.U16, HGMMA.64x128x16.F32.BF16
    operands: str
    predicate: str = ""  # "@!P0", or "" when unconditional
    target: str | None = None  # a branch's or call's label

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


@dataclass
class Program:
    """One cubin's instructions in address order and the address of each label."""
    instructions: list[Instruction]
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def subroutines_start(self) -> int | None:
        """Where ptxas's subroutines begin ($__internal_0_$__cuda_sm20_div_s64, ...): after
        the kernel's own code, each named by a "$" label."""
        starts = [address for label, address in self.labels.items() if label.startswith("$")]
        return min(starts) if starts else None


def parse(sass: str) -> Program:
    instructions, labels, pending = [], {}, []
    for line in sass.splitlines():
        found = _INSTRUCTION.match(line)
        if found:
            address = int(found["address"], 16)
            for label in pending:  # a label names the next instruction's address
                labels[label] = address
            pending = []
            operands = found["operands"].strip()
            target = _TARGET.search(operands)
            instructions.append(Instruction(
                address, found["opcode"], operands, (found["predicate"] or "").strip(),
                target["label"] if target else None))
            continue
        label = _LABEL.match(line)
        if label:
            pending.append(label["label"])
    return Program(instructions, labels)


@dataclass(frozen=True, order=True)
class Loop:
    start: int  # address of the loop's first instruction (the back edge's target)
    end: int  # address of the back edge

    def contains(self, other: "Loop") -> bool:
        return self != other and self.start <= other.start and other.end <= self.end


def loops(program: Program) -> list[Loop]:
    """Every loop closed by a back edge; several back edges to one head make one loop.

    A branch to itself is not a loop: ptxas ends every kernel with one (`BRA` to its own
    label after the last EXIT), a trap that never runs. Nor is a branch back across an
    unconditional EXIT: ptxas puts a slow path out of line after the kernel's EXIT (an
    mbarrier wait for a TMA copy, retried until the copy lands), entered by a forward branch
    from a loop and left by a BRA back into it; taken as a back edge, that BRA would make a
    "loop" of the real loop's second half and the whole epilogue.
    """
    code = executed(program)
    exits = [i.address for i in code if i.base == "EXIT" and not i.predicate]
    ends: dict[int, int] = {}
    for instruction in code:
        if instruction.base not in _BRANCHES or instruction.target is None:
            continue
        start = program.labels.get(instruction.target)
        if (start is not None and start < instruction.address
                and not any(start < end < instruction.address for end in exits)):
            ends[start] = max(ends.get(start, start), instruction.address)
    return sorted(Loop(start, end) for start, end in ends.items())


def body(program: Program, loop: Loop) -> list[Instruction]:
    return [i for i in program.instructions if loop.start <= i.address <= loop.end]


def conditional(program: Program, loop: Loop) -> int:
    """Instructions of the loop that a forward branch inside it can jump over (an `if` in
    the loop body: conv's weight gradient sums the bias only in its first column tile).
    The loop's count includes them: an upper bound for the programs that skip them."""
    skipped = set()
    for instruction in body(program, loop):
        if instruction.base in _BRANCHES and instruction.target is not None:
            target = program.labels.get(instruction.target)
            if target is not None and instruction.address < target <= loop.end:
                skipped.update(i.address for i in body(program, loop)
                               if instruction.address < i.address < target)
    return len(skipped)


def executed(program: Program) -> list[Instruction]:
    """The kernel's own instructions: not the padding (NOPs, the end-of-code trap) nor the
    subroutines. ptxas calls its 64-bit division routine only on the slow path of a 64-bit
    division whose operands do not fit 32 bits; the inline 32-bit path is what runs at
    AlexNet's sizes, and it is counted."""
    end = program.subroutines_start
    return [i for i in program.instructions
            if (end is None or i.address < end) and i.base != "NOP"
            and not (i.base == "BRA" and program.labels.get(i.target) == i.address)]


def mma_count(instructions) -> int:
    return sum(i.base in MMA_OPCODES for i in instructions)


def main_loop(program: Program) -> Loop | None:
    """The innermost loop with matrix instructions (the most of them, then the longest);
    in a kernel with none, the longest innermost loop; None for straight-line code."""
    found = loops(program)
    if not found:
        return None
    bodies = {loop: body(program, loop) for loop in found}
    with_mma = [loop for loop in found if mma_count(bodies[loop])]
    if with_mma:
        # innermost among the loops with MMAs: no inner loop of its own holds MMAs
        candidates = [loop for loop in with_mma if not any(loop.contains(o) for o in with_mma)]
        return max(candidates, key=lambda loop: (mma_count(bodies[loop]), len(bodies[loop])))
    innermost = [loop for loop in found if not any(loop.contains(o) for o in found)]
    return max(innermost, key=lambda loop: len(bodies[loop]))


def access_width(instruction: Instruction) -> int | str:
    """Bytes per thread of a global load or store, or "tma" for a bulk tensor copy."""
    if instruction.base.startswith("UTMA"):
        return "tma"
    modifiers = instruction.opcode.split(".")[1:]
    for modifier, width in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1),
                            ("S8", 1)):
        if modifier in modifiers:
            return width
    return 4  # no size modifier: 32 bits


def widths(instructions, opcodes) -> dict[str, int]:
    """{"16": 4, "2": 16, "tma": 1}: how many instructions of each access width."""
    counts: dict[str, int] = {}
    for instruction in instructions:
        if instruction.base in opcodes:
            key = str(access_width(instruction))
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def divisions(instructions) -> dict[str, int]:
    """Integer division sequences ptxas emits for a divisor not known at compile time.

    "runtime_32": each starts by converting the divisor with I2F(.U32).RP, whose MUFU.RCP
    reciprocal is then corrected with IMAD.HI steps (about 15-25 instructions, a division
    and its remainder share one). "calls_64": a 64-bit division or remainder, a CALL to
    a ptxas subroutine of its own. Division by a constant is a multiply (IMAD.HI by a
    magic number), not counted here.
    """
    runtime = sum(i.base == "I2F" and "RP" in i.opcode.split(".")[1:] for i in instructions)
    calls = sum(i.base == "CALL" and bool(re.search(r"div|rem", i.target or ""))
                for i in instructions)
    return {"runtime_32": runtime, "calls_64": calls}


def matrix_opcode(instructions) -> str:
    """The most frequent matrix instruction (with its shape and types), else FFMA/DFMA
    when the code multiply-adds on the CUDA cores, else "-"."""
    for kinds in (MMA_OPCODES, ("FFMA", "DFMA")):
        counts: dict[str, int] = {}
        for instruction in instructions:
            if instruction.base in kinds:
                key = instruction.opcode if instruction.base in MMA_OPCODES else instruction.base
                counts[key] = counts.get(key, 0) + 1
        if counts:
            return max(counts, key=counts.get)
    return "-"


def math_instructions(instructions) -> dict[str, int]:
    """{opcode: count} of the matrix instructions, or of FFMA when there are none (a dot
    product on the CUDA cores): what does the multiply-adds."""
    counts: dict[str, int] = {}
    for instruction in instructions:
        if instruction.base in MMA_OPCODES:
            counts[instruction.opcode] = counts.get(instruction.opcode, 0) + 1
    if not counts:
        ffma = sum(i.base == "FFMA" for i in instructions)
        counts = {"FFMA": ffma} if ffma else {}
    return counts


def summary(instructions) -> dict:
    """The counts the static report gives a stretch of code (a loop or a whole kernel)."""
    opcodes: dict[str, int] = {}
    for instruction in instructions:
        opcodes[instruction.base] = opcodes.get(instruction.base, 0) + 1
    return {
        "instructions": len(instructions),
        "mma": mma_count(instructions),
        "math": math_instructions(instructions),
        "loads": widths(instructions, GLOBAL_LOADS),
        "stores": widths(instructions, GLOBAL_STORES),
        "divisions": divisions(instructions),
        "local_memory": opcodes.get("LDL", 0) + opcodes.get("STL", 0),
        "branches": sum(i.base in _BRANCHES for i in instructions),
        "barriers": opcodes.get("BAR", 0),
        "opcodes": dict(sorted(opcodes.items(), key=lambda kv: -kv[1])[:12]),
    }


def _successors(code: list[Instruction], program: Program) -> dict[int, list[int]]:
    """Each instruction's address -> the addresses it can hand control to (per instruction:
    the code is short enough that basic blocks would buy nothing)."""
    following = {a.address: b.address for a, b in zip(code, code[1:])}
    successors = {}
    for instruction in code:
        found = []
        if instruction.base in _BRANCHES and instruction.target is not None:
            target = program.labels.get(instruction.target)
            if target is not None:
                found.append(target)
        ends = instruction.base in ("EXIT", *_BRANCHES) and not instruction.predicate
        if not ends and instruction.address in following:
            found.append(following[instruction.address])
        successors[instruction.address] = found
    return successors


def _reachable(starts, edges: dict[int, list[int]]) -> set[int]:
    seen, pending = set(), list(starts)
    while pending:
        address = pending.pop()
        if address not in seen:
            seen.add(address)
            pending.extend(edges.get(address, ()))
    return seen


def path_outside(program: Program, loop: Loop) -> int:
    """Instructions outside ``loop`` that a program running it can execute, each once: those
    on a way from the kernel's start into the loop, and those it can reach from the loop.
    Code only programs that never enter the loop run is not: conv's weight gradient leaves
    its bias programs' branch (about 650 instructions) to them."""
    code = executed(program)
    successors = _successors(code, program)
    inside = {i.address for i in code if loop.start <= i.address <= loop.end}
    predecessors: dict[int, list[int]] = {}
    for source, targets in successors.items():
        for target in targets:
            predecessors.setdefault(target, []).append(source)
    before = _reachable([code[0].address], successors) & _reachable([loop.start], predecessors)
    after = _reachable([t for a in inside for t in successors[a] if t not in inside],
                       successors)
    return len((before | after) & set(successors) - inside)


def copy_pipeline(program: Program, loop: Loop) -> dict:
    """How far ahead a main loop's asynchronous copies run: what bounds it by load latency.

    cp.async: each iteration commits its copies in LDGDEPBAR groups and waits with
    `DEPBAR.LE SB0, N` until at most N groups are in flight, so the copies a wait releases
    were issued N // groups + 1 iterations earlier (N = 0: the loop waits for every copy it
    issued, those of the iteration before). TMA: the copies an mbarrier (SYNCS.PHASECHK)
    waits for were issued num_stages - 1 iterations earlier (Triton's pipeliner), which the
    SASS does not state: None here, the config's stages in bench/static/h100_model.py.
    ``issued_at``: instructions from the loop's start to its last copy (commit or TMA
    load), the part of an iteration issued before the next copies leave.
    """
    code = body(program, loop)
    commits = sum(i.base == "LDGDEPBAR" for i in code)
    waits = [int(i.operands.split(",")[1], 0) for i in code
             if i.opcode == "DEPBAR.LE" and i.operands.startswith("SB0")]
    tma = sum(i.base == "UTMALDG" for i in code)
    copies = [k for k, i in enumerate(code) if i.base in ("LDGDEPBAR", "UTMALDG")]
    return {
        "commits": commits,
        "wait": min(waits) if waits else None,
        "cp_async_ahead": (min(waits) // commits + 1) if waits and commits else None,
        "tma_loads": tma,
        "issued_at": (copies[-1] + 1) if copies else None,
    }


def analyse(sass: str) -> dict:
    """The kernel's whole-code summary and its main loop's (None when it has no loop)."""
    program = parse(sass)
    code = executed(program)
    loop = main_loop(program)
    return {
        "kernel": summary(code),
        "matrix_instruction": matrix_opcode(code),
        "loops": len(loops(program)),
        "main_loop": None if loop is None else {
            "start": f"{loop.start:#06x}", "end": f"{loop.end:#06x}",
            "conditional": conditional(program, loop), **summary(body(program, loop)),
            "copies": copy_pipeline(program, loop),
            "path_outside": path_outside(program, loop)},
    }
