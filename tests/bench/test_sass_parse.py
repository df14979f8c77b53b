"""bench/static: sass_parse.py, cubin_tools.py and h100_model.py on hand-written SASS.

The text is in nvdisasm's format (`nvdisasm -c`); the numbers asserted are counted by hand
from the snippets. tests/bench/test_sass.py runs the same parser on real compiled kernels.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.static import cubin_tools, h100_model, sass_parse  # noqa: E402

# A pipelined GEMM loop: a prologue, a loop of 8 instructions with 2 HGMMA, one 16-byte
# LDGSTS and two 2-byte LDGs, an epilogue, and ptxas's end-of-code trap.
GEMM = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDGSTS.E.BYPASS.128 [R6], desc[UR14][R8.64], P1 ;
        /*0020*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0030*/                   LDG.E.U16 R10, desc[UR14][R2.64] ;
        /*0040*/                   LDG.E.U16 R11, desc[UR14][R2.64+0x2] ;
        /*0050*/                   LDGSTS.E.BYPASS.128 [R77], desc[UR14][R72.64], P1 ;
        /*0060*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0070*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24, gsb0 ;
        /*0080*/                   IADD3 R4, R4, 0x1, RZ ;
        /*0090*/                   ISETP.GE.AND P0, PT, R4, R5, PT ;
        /*00a0*/              @!P0 BRA `(.L_x_1) ;
.L_x_0:
        /*00b0*/                   STG.E.U16 desc[UR14][R2.64], R24 ;
        /*00c0*/                   EXIT ;
.L_x_2:
        /*00d0*/                   BRA `(.L_x_2);
        /*00e0*/                   NOP;
"""

# Two nested loops (the inner one at 0x20-0x40) and an `if` inside the outer one (the
# forward branch at 0x60 skips 0x70 and 0x80).
NESTED = """
        /*0000*/                   MOV R0, RZ ;
.L_x_0:
        /*0010*/                   MOV R1, RZ ;
.L_x_1:
        /*0020*/                   FFMA R2, R3, R4, R2 ;
        /*0030*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0040*/               @P1 BRA `(.L_x_1) ;
        /*0050*/                   ISETP.NE.AND P2, PT, R0, RZ, PT ;
        /*0060*/               @P2 BRA `(.L_x_2) ;
        /*0070*/                   LDG.E R5, desc[UR4][R6.64] ;
        /*0080*/                   LDG.E.64 R8, desc[UR4][R6.64] ;
.L_x_2:
        /*0090*/                   IADD3 R0, R0, 0x1, RZ ;
        /*00a0*/               @P0 BRA `(.L_x_0) ;
        /*00b0*/                   EXIT ;
"""

# A TMA-fed GEMM loop (0x30-0xb0) as ptxas lays it out: the mbarrier wait's retry is out of
# line after the EXIT (0xf0-0x100), entered by the forward branch at 0x50 and left by the
# BRA at 0x110 back into the loop's middle, which closes no loop of its own.
TMA_WAIT = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   UTMALDG.4D [UR8], [UR6] ;
        /*0020*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0030*/                   IADD3 R4, R4, 0x1, RZ ;
        /*0040*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P4, [UR17+0x18000], R18 ;
        /*0050*/              @!P4 BRA `(.L_x_2) ;
.L_x_3:
        /*0060*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR20], R24 ;
        /*0070*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR20], R24, gsb0 ;
        /*0080*/                   LDGSTS.E.BYPASS.128 [R19], desc[UR32][R20.64], P6 ;
        /*0090*/                   @UP0 UTMALDG.4D [UR8], [UR6] ;
        /*00a0*/                   ISETP.NE.U32.AND P4, PT, R4, UR16, PT ;
        /*00b0*/               @P4 BRA `(.L_x_1) ;
.L_x_0:
        /*00c0*/                   STG.E.128 desc[UR32][R40.64], R44 ;
        /*00d0*/              @!P1 EXIT ;
        /*00e0*/                   EXIT ;
.L_x_2:
        /*00f0*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P4, [UR17+0x18000], R18 ;
        /*0100*/              @!P4 BRA `(.L_x_2) ;
        /*0110*/                   BRA `(.L_x_3) ;
.L_x_4:
        /*0120*/                   BRA `(.L_x_4);
"""

# A kernel laid out as conv's weight gradient was with its split-K sums in the kernel: the
# bias programs' branch first (0x10-0x50, with a loop of its own, and its EXIT), the GEMM
# programs' path from 0x60: the main loop (0x70-0xa0), the partial sums' store, an EXIT for
# all but a tile's last program, then that program's loop over the splits (0xd0-0xf0).
WEIGHT_GRADIENT = """
        /*0000*/               @P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   FADD R8, R8, R4 ;
        /*0030*/               @P1 BRA `(.L_x_1) ;
        /*0040*/                   STG.E desc[UR4][R2.64], R8 ;
        /*0050*/                   EXIT ;
.L_x_0:
        /*0060*/                   LDGSTS.E.BYPASS.128 [R6], desc[UR14][R8.64] ;
.L_x_2:
        /*0070*/                   LDGSTS.E.BYPASS.128 [R6], desc[UR14][R8.64] ;
        /*0080*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0090*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24, gsb0 ;
        /*00a0*/               @P2 BRA `(.L_x_2) ;
        /*00b0*/                   STG.E.128 desc[UR14][R40.64], R24 ;
        /*00c0*/               @P3 EXIT ;
.L_x_3:
        /*00d0*/                   LDG.E.128.STRONG.GPU R44, desc[UR14][R40.64] ;
        /*00e0*/                   LDG.E.128.STRONG.GPU R48, desc[UR14][R42.64] ;
        /*00f0*/               @P4 BRA `(.L_x_3) ;
        /*0100*/                   STG.E.128 desc[UR14][R40.64], R44 ;
        /*0110*/                   EXIT ;
.L_x_4:
        /*0120*/                   BRA `(.L_x_4);
"""

# A 32-bit runtime division (ptxas's reciprocal sequence), a division by a constant (a
# multiply by a magic number: not a division sequence), and a 64-bit division with its
# 32-bit fast path and its slow-path call into the subroutine after the kernel.
DIVISIONS = """
        /*0000*/                   I2F.U32.RP R0, R9 ;
        /*0010*/                   MUFU.RCP R0, R0 ;
        /*0020*/                   VIADD R2, R0, 0xffffffe ;
        /*0030*/                   F2I.FTZ.U32.TRUNC.NTZ R3, R2 ;
        /*0040*/                   IMAD.HI.U32 R3, R3, R7, R2 ;
        /*0050*/                   IMAD.HI R72, R151, 0x51eb851f, RZ ;
        /*0060*/              @!P0 BRA `(.L_x_0) ;
        /*0070*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_s64) ;
        /*0080*/                   BRA `(.L_x_1) ;
.L_x_0:
        /*0090*/                   I2F.RP R4, R10 ;
.L_x_1:
        /*00a0*/                   LDG.E.U8 R1, desc[UR4][R2.64] ;
        /*00b0*/                   EXIT ;
$__internal_0_$__cuda_sm20_div_s64:
        /*00c0*/                   I2F.U64.RP R0, R8 ;
        /*00d0*/                   RET.REL.NODEC R20 `(max_pool2d_backward_kernel) ;
"""


def test_parse_instructions_and_labels():
    program = sass_parse.parse(GEMM)
    assert len(program.instructions) == 15
    assert program.labels == {".L_x_1": 0x30, ".L_x_0": 0xb0, ".L_x_2": 0xd0}
    branch = program.instructions[10]
    assert (branch.address, branch.predicate, branch.opcode, branch.target) == (
        0xa0, "@!P0", "BRA", ".L_x_1")
    assert program.instructions[6].opcode == "HGMMA.64x128x16.F32.BF16"


def test_loop_from_the_back_edge_not_the_trap():
    program = sass_parse.parse(GEMM)
    assert sass_parse.loops(program) == [sass_parse.Loop(0x30, 0xa0)]  # not the BRA at 0xd0
    loop = sass_parse.main_loop(program)
    summary = sass_parse.summary(sass_parse.body(program, loop))
    assert summary["instructions"] == 8
    assert summary["mma"] == 2
    assert summary["math"] == {"HGMMA.64x128x16.F32.BF16": 2}
    assert summary["loads"] == {"16": 1, "2": 2}
    assert summary["stores"] == {}
    # the whole kernel without the trap and the NOP
    assert len(sass_parse.executed(program)) == 13


def test_a_jump_back_from_out_of_line_code_is_no_loop():
    program = sass_parse.parse(TMA_WAIT)
    # the loop and the retry's own spin; not 0x60-0x110, the loop's second half and the
    # epilogue (4 instructions more than the loop, and its stores)
    assert sass_parse.loops(program) == [sass_parse.Loop(0x30, 0xb0), sass_parse.Loop(0xf0, 0x100)]
    loop = sass_parse.main_loop(program)
    assert loop == sass_parse.Loop(0x30, 0xb0)
    summary = sass_parse.summary(sass_parse.body(program, loop))
    assert (summary["instructions"], summary["mma"]) == (9, 2)
    assert summary["loads"] == {"16": 1, "tma": 1}
    assert summary["stores"] == {}


def test_nested_loops_innermost_and_conditional():
    program = sass_parse.parse(NESTED)
    outer, inner = sass_parse.Loop(0x10, 0xa0), sass_parse.Loop(0x20, 0x40)
    assert sass_parse.loops(program) == [outer, inner]
    assert outer.contains(inner) and not inner.contains(outer)
    # no MMAs: the longest innermost loop, which is the inner one
    assert sass_parse.main_loop(program) == inner
    assert sass_parse.conditional(program, outer) == 2
    assert sass_parse.conditional(program, inner) == 0
    assert sass_parse.summary(sass_parse.body(program, outer))["loads"] == {"4": 1, "8": 1}
    assert sass_parse.math_instructions(sass_parse.body(program, inner)) == {"FFMA": 1}


def test_straight_line_code_has_no_main_loop():
    program = sass_parse.parse(DIVISIONS)
    assert sass_parse.loops(program) == []  # the forward branches are not loops
    assert sass_parse.analyse(DIVISIONS)["main_loop"] is None


def test_division_sequences():
    program = sass_parse.parse(DIVISIONS)
    assert program.subroutines_start == 0xc0
    code = sass_parse.executed(program)
    assert code[-1].base == "EXIT"  # the subroutine is not the kernel's code
    # two reciprocal seeds (I2F.U32.RP, I2F.RP), not the magic-number IMAD.HI, not the
    # subroutine's I2F.U64.RP; one call to the 64-bit routine
    assert sass_parse.divisions(code) == {"runtime_32": 2, "calls_64": 1}
    assert sass_parse.widths(code, sass_parse.GLOBAL_LOADS) == {"1": 1}


@pytest.mark.parametrize("opcode, width", [
    ("LDG.E", 4), ("LDG.E.U16", 2), ("LDG.E.S8", 1), ("LDG.E.64", 8), ("LDG.E.128", 16),
    ("LDG.E.128.CONSTANT", 16), ("LDGSTS.E.BYPASS.128", 16), ("LDGSTS.E", 4),
    ("STG.E.U16", 2), ("UTMALDG.2D", "tma")])
def test_access_width(opcode, width):
    assert sass_parse.access_width(sass_parse.Instruction(0, opcode, "")) == width


def test_matrix_opcode_prefers_mma_over_ffma():
    program = sass_parse.parse(GEMM + NESTED.replace("/*00", "/*01"))
    assert sass_parse.matrix_opcode(program.instructions) == "HGMMA.64x128x16.F32.BF16"
    assert sass_parse.matrix_opcode(sass_parse.parse(NESTED).instructions) == "FFMA"
    assert sass_parse.matrix_opcode(sass_parse.parse(DIVISIONS).instructions) == "-"


def test_resource_usage_line():
    text = (" Function conv2d_relu_backward_weight_kernel:\n"
            "  REG:255 STACK:488 SHARED:1024 LOCAL:0 CONSTANT[0]:640 TEXTURE:0 SURFACE:0\n")
    assert cubin_tools.parse_resource_usage(text) == {
        "registers": 255, "spill_bytes": 488, "stack_bytes": 488, "local_bytes": 0,
        "static_shared_bytes": 1024}


def test_tool_outputs_are_kept_per_cubin(tmp_path, monkeypatch):
    """nvdisasm runs once per distinct cubin; a changed cubin runs it again."""
    runs = tmp_path / "runs"
    fake = tmp_path / "nvdisasm"
    fake.write_text(f"#!/bin/sh\necho run >> {runs}\necho SASS of; cat \"$2\"\n")
    fake.chmod(0o755)
    monkeypatch.setattr(cubin_tools, "tool", lambda name: str(fake))
    monkeypatch.setenv("ALEXNET_SASS_CACHE", str(tmp_path / "cache"))
    cubin = tmp_path / "kernel.cubin"
    cubin.write_bytes(b"\x7fELF one")
    assert cubin_tools.disassemble(str(cubin)) == "SASS of\n\x7fELF one"
    assert cubin_tools.disassemble(str(cubin)) == "SASS of\n\x7fELF one"
    assert runs.read_text().count("run") == 1
    cubin.write_bytes(b"\x7fELF two")
    assert cubin_tools.disassemble(str(cubin)) == "SASS of\n\x7fELF two"
    assert runs.read_text().count("run") == 2


def test_tensor_core_cycles_and_issue_ratio():
    # the issue's figures: one m64n128k16 is 64 cycles; a 128x128x64 tile on 8 warps
    # (2 warpgroups x 4 HGMMA) is 512 tensor-core cycles per iteration
    assert h100_model.math_cycles("HGMMA.64x128x16.F32.BF16") == 64
    assert h100_model.math_cycles("HGMMA.64x128x8.F32.TF32") == 64  # half the rate, half the k
    assert h100_model.math_cycles("HMMA.16816.F32.BF16") == 4
    assert h100_model.math_cycles("FFMA") == 1
    tile = h100_model.fma_per_warp_instruction("HGMMA.64x128x16.F32.BF16") * 4 * 8
    assert tile == 128 * 128 * 64
    # 1,800 instructions x 2 warps per scheduler against 512 cycles
    ratio = h100_model.issue_ratio(1800, {"HGMMA.64x128x16.F32.BF16": 4}, warps=8)
    assert ratio == pytest.approx(1800 * 2 / 512)
    assert h100_model.issue_ratio(100, {}, warps=4) is None


def test_predicted_time_terms():
    # 1 ms of bf16 FLOPs on all SMs, half the SMs busy: 2 ms
    flops = h100_model.PEAK_FLOPS["bf16"] * 1e-3
    full = h100_model.predicted_seconds(flops, 0, "bf16", 0, programs=1000)
    half = h100_model.predicted_seconds(flops, 0, "bf16", 0, programs=66)
    assert full["predicted"] == pytest.approx(1e-3) and half["compute"] == pytest.approx(2e-3)
    # bytes at the device's sustained bandwidth: H200 4.3 TB/s (issue 11's figure), H100 SXM
    # the same 90% of its 3.35 TB/s
    h200 = h100_model.MODELS["h200"]
    memory = h100_model.predicted_seconds(0, 4.3e9, None, 0, programs=1000, model=h200)
    assert memory["predicted"] == pytest.approx(1e-3)
    memory = h100_model.predicted_seconds(0, 4.3e9, None, 0, programs=1000)
    assert memory["predicted"] == pytest.approx(4.3e9 / (3.35e12 * 4.3 / 4.8))
    # 4 schedulers x 132 SMs x 1.98e9 issue slots a second
    issue = h100_model.predicted_seconds(0, 0, None, 4 * 132 * 1.98e9, programs=10**6)
    assert issue["predicted"] == pytest.approx(1.0) and issue["issue"] == pytest.approx(1.0)


# A loop that waits for every copy it issued (DEPBAR.LE SB0, 0x0) and commits two groups of
# cp.async copies late in its body: what conv's weight gradient compiled to at 2 stages.
WAIT_ALL = """
.L_x_1:
        /*0000*/                   DEPBAR.LE SB0, 0x0 ;
        /*0010*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0020*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24, gsb0 ;
        /*0030*/                   LDGSTS.E.BYPASS.128 [R6], desc[UR14][R8.64], P1 ;
        /*0040*/                   LDGDEPBAR ;
        /*0050*/                   LDGSTS.E.BYPASS.128 [R7], desc[UR14][R10.64], P1 ;
        /*0060*/                   LDGDEPBAR ;
        /*0070*/                   IADD3 R4, R4, 0x1, RZ ;
        /*0080*/              @!P0 BRA `(.L_x_1) ;
        /*0090*/                   EXIT ;
"""


def test_how_far_ahead_a_loop_copies():
    program = sass_parse.parse(WAIT_ALL)
    copies = sass_parse.copy_pipeline(program, sass_parse.main_loop(program))
    # two commits per iteration, waiting until none is in flight: the copies are needed one
    # iteration after they leave, the last of them 7 instructions into the loop
    assert copies == {"commits": 2, "wait": 0, "cp_async_ahead": 1, "tma_loads": 0,
                      "issued_at": 7}
    assert h100_model.copies_ahead(copies, num_stages=2) == 1
    # waiting until 2 groups remain: the copies of the iteration before the last one
    assert h100_model.copies_ahead({**copies, "wait": 2, "cp_async_ahead": 2}, 3) == 2
    program = sass_parse.parse(TMA_WAIT)
    copies = sass_parse.copy_pipeline(program, sass_parse.main_loop(program))
    assert (copies["tma_loads"], copies["commits"], copies["issued_at"]) == (1, 0, 7)
    assert h100_model.copies_ahead(copies, num_stages=3) == 2  # Triton: stages - 1
    assert h100_model.copies_ahead(None, num_stages=3) is None


def test_the_busiest_sm_runs_whole_programs():
    def busiest(programs, **fields):
        args = dict(programs=programs, mma_programs=programs, resident=1, iterations=10,
                    mma_cycles=1000, loop_issue=500, other_issue=0, ahead=None, issued_at=0)
        return h100_model.busiest_sm(**{**args, **fields})

    # 338 programs on 132 SMs: 2.56 on average, but one SM runs 3 (wave quantization)
    assert busiest(338)["programs_per_sm"] == 3
    assert busiest(338)["tensor"] == 3 * 10 * 1000
    assert busiest(264)["tensor"] == busiest(263)["tensor"] == 2 * 10 * 1000
    # two resident programs share the tensor cores: the chain runs in 2 rounds, not 3
    assert busiest(396, resident=2)["chain"] == 2 * 10 * 1000
    # a copy issued 800 cycles into an iteration and needed the next one: (800 + latency)
    # cycles per iteration, above the MMAs' 1000; needed 2 iterations later: hidden
    latency = h100_model.LOAD_LATENCY_CYCLES
    exposed = busiest(132, ahead=1, issued_at=800)
    assert exposed["per_iteration"] == "latency"
    assert exposed["chain"] == latency + 10 * (800 + latency)
    hidden = busiest(132, ahead=2, issued_at=800)
    assert hidden["per_iteration"] == "compute" and hidden["chain"] == latency + 10 * 1000
    # the issued time: the chain, named by what paces its iterations
    seconds = h100_model.issued_seconds(exposed, 0)
    assert seconds["latency"] == seconds["predicted"] == pytest.approx(
        exposed["chain"] / h100_model.DEFAULT.clock_hz)
    assert h100_model.issued_seconds(busiest(338, ahead=1, issued_at=0), 0)["latency"] == 0.0


def test_the_path_of_a_program_that_runs_the_main_loop():
    """Code outside the main loop counts once, but not the branch only the programs that never
    enter it take (the weight gradient's bias programs)."""
    program = sass_parse.parse(WEIGHT_GRADIENT)
    loop = sass_parse.main_loop(program)
    assert (loop.start, loop.end) == (0x70, 0xa0)
    # 0x00 and 0x60 before it; 0xb0 to 0x110 after it (the sum's loop once): not 0x10-0x50
    assert sass_parse.path_outside(program, loop) == 2 + 7
    tma = sass_parse.parse(TMA_WAIT)
    tma_loop = sass_parse.main_loop(tma)
    # every instruction outside the loop is on its path: the retry at 0xf0-0x110 too
    assert sass_parse.path_outside(tma, tma_loop) == len(sass_parse.executed(tma)) - 9
    gemm = sass_parse.parse(GEMM)
    assert sass_parse.path_outside(gemm, sass_parse.main_loop(gemm)) == 3 + 2


def test_resident_programs():
    assert h100_model.resident_programs(255, 8, 65536) == 1  # registers: 255 x 256 threads
    assert h100_model.resident_programs(32, 4, 0) == 16  # warp slots: 64 / 4
    assert h100_model.resident_programs(32, 4, 100_000) == 2  # shared memory


def _gemm_row(**fields):
    row = {"kernel": "k", "flops": 1, "spill_bytes": 0, "issue_ratio": 0.9, "programs": 132,
           "matrix_instruction": "HGMMA.64x128x16.F32.BF16",
           "main_loop": {"instructions": 230, "math": {"HGMMA.64x128x16.F32.BF16": 4},
                         "loads": {"16": 4, "tma": 1}}}
    row.update(fields)
    return row


def test_budget_checks():
    from bench.static import sass_budgets
    good = [_gemm_row(), {"kernel": "split_sum", "flops": 0, "spill_bytes": 0}]
    assert all(sass_budgets.check(b, good)[0] for b in sass_budgets.BUDGETS)
    assert sass_budgets.check("no_spills", [_gemm_row(spill_bytes=8)]) == (False, "k spills 8 B")
    assert not sass_budgets.check("issue_ratio", [_gemm_row(issue_ratio=1.01)])[0]
    assert not sass_budgets.check("programs", [_gemm_row(programs=131)])[0]
    narrow = _gemm_row(main_loop={**_gemm_row()["main_loop"], "loads": {"16": 4, "2": 32}})
    assert sass_budgets.check("loads_16B", [narrow]) == (False, "32 loads of 2 B")
    assert sass_budgets.budgets_of("pool1.backward") == ("no_spills", "access_16B")
    assert sass_budgets.budgets_of("fc6.forward") == sass_budgets.BUDGETS


def test_ffma_loops_have_their_own_issue_budget():
    """ieee fp32 issues one slot per FFMA: its budget is <= 1.15, the tensor cores' 1.0."""
    from bench.static import sass_budgets

    def ffma(ratio):
        return _gemm_row(issue_ratio=ratio, matrix_instruction="FFMA",
                         main_loop={"instructions": round(4096 * ratio), "math": {"FFMA": 4096},
                                    "loads": {"16": 16}})
    assert sass_budgets.check("issue_ratio", [ffma(1.12)]) == (
        True, "issue ratio 1.12 (4588 instructions per 4096 FFMA) (FFMA budget 1.15)")
    assert not sass_budgets.check("issue_ratio", [ffma(1.16)])[0]
    assert not sass_budgets.check("issue_ratio", [_gemm_row(issue_ratio=1.12)])[0]  # HGMMA


# A memory-bound kernel without a loop: a 4-byte scalar load, two 16-byte tile loads, one
# 16-byte and one 4-byte store.
STRAIGHT = """
        /*0000*/                   S2R R0, SR_CTAID.X ;
        /*0010*/              @!P2 LDG.E R2, desc[UR6][R6.64] ;
        /*0020*/               @P0 LDG.E.128 R12, desc[UR6][R10.64] ;
        /*0030*/               @P0 LDG.E.128 R16, desc[UR6][R4.64] ;
        /*0040*/               @P0 STG.E.128 desc[UR6][R8.64], R12 ;
        /*0050*/                   STG.E desc[UR6][R8.64+0x10], R2 ;
        /*0060*/                   EXIT ;
.L_x_0:
        /*0070*/                   BRA `(.L_x_0);
"""

# The same accesses around a loop: the scalar load before it, the 16-byte loads in it, the
# 16-byte store after it; then a copy whose loop reads 2 bytes and writes nothing.
LOOPED = """
        /*0000*/                   LDG.E R2, desc[UR6][R6.64] ;
.L_x_0:
        /*0010*/                   LDG.E.128 R12, desc[UR6][R10.64] ;
        /*0020*/                   FADD R20, R20, R12 ;
        /*0030*/                   IADD3 R4, R4, 0x1, RZ ;
        /*0040*/               @P0 BRA `(.L_x_0) ;
        /*0050*/                   STG.E.128 desc[UR6][R8.64], R20 ;
        /*0060*/                   EXIT ;
"""


def _memory_row(sass: str, kernel: str = "k") -> dict:
    """A report row (bench/static/sass_predict.row's fields that the budgets read) of hand SASS."""
    analysed = sass_parse.analyse(sass)
    return {"kernel": kernel, "flops": 0, "spill_bytes": 0, "main_loop": analysed["main_loop"],
            "kernel_loads": analysed["kernel"]["loads"],
            "kernel_stores": analysed["kernel"]["stores"]}


def test_store_widths():
    code = sass_parse.executed(sass_parse.parse(STRAIGHT))
    assert sass_parse.widths(code, sass_parse.GLOBAL_STORES) == {"16": 1, "4": 1}
    assert sass_parse.widths(code, sass_parse.GLOBAL_LOADS) == {"16": 2, "4": 1}
    assert sass_parse.analyse(LOOPED)["main_loop"]["stores"] == {}


def test_access_16B_budget():
    from bench.static import sass_budgets
    straight, looped = _memory_row(STRAIGHT), _memory_row(LOOPED)
    # Straight-line code: every access counts, the scalar load and the narrow store miss.
    assert sass_budgets.check("access_16B", [straight]) == (
        False, "loads 1 of 4 B; stores 1 of 4 B")
    # With a loop: its loads and the kernel's stores; the scalar load before the loop is
    # not in the main body.
    assert sass_budgets.check("access_16B", [looped]) == (True, "all 16 B or TMA")
    # A store-less kernel has nothing to measure; with several kernels each is named.
    no_store = _memory_row(LOOPED.replace("STG.E.128 desc[UR6][R8.64], R20", "NOP"), "copy")
    assert sass_budgets.check("access_16B", [looped, no_store]) == (
        False, "k: all 16 B or TMA, copy: no global store")
    wide = _memory_row(STRAIGHT.replace("LDG.E R2", "LDG.E.128 R2").replace(
        "STG.E desc", "STG.E.128 desc"))
    assert sass_budgets.check("access_16B", [wide]) == (True, "all 16 B or TMA")
