"""probe dryrun: nvcc --dryrun output, parsed into phases."""

from __future__ import annotations

from vllm_matrix.stages import probe


def test_parse_dryrun() -> None:
    text = (
        "#$ _HERE_=/cuda/bin\n#$ PATH=/cuda/nvvm/bin:/cuda/bin:/usr/bin\n"
        '#$ gcc -D__CUDA_ARCH_LIST__=900 -E -x c++ "a b.cu" -o "k/a.cpp4.ii"\n'
        '#$ cudafe++ --c++17 --gen_c_file_name "k/a.cudafe1.cpp" "k/a.cpp4.ii"\n'
        "#$ gcc -D__CUDA_ARCH__=900 -E -x c++ a.cu -o k/a.cpp1.ii\n"
        "#$ cicc -arch compute_90 k/a.cpp1.ii -o k/a.ptx\n#$ ptxas -arch=sm_90 k/a.ptx\n"
        "#$ fatbinary -64 --create=k/a.fatbin\n#$ rm k/a.fatbin\n"
        "#$ gcc -D__CUDA_ARCH__=900 -c -x c++ k/a.cudafe1.cpp -o a.o\n"
    )
    steps, env = probe.parse_dryrun(text)
    assert [s.phase for s in steps] == [
        "host-preprocess",
        "front-end",
        "device-preprocess",
        "device-codegen",
        "ptxas",
        "fatbinary",
        "rm",
        "host-compile",
    ]
    assert steps[0].argv[-3] == "a b.cu"
    assert env["PATH"].startswith("/cuda/nvvm/bin")


def test_parse_dryrun_expands_nvcc13s_variables() -> None:
    # nvcc 13.0 (PyPI's and /usr/local/cuda's alike) calls cicc through a variable; run
    # unexpanded it was "command not found" (exit 127), found on the device machine.
    text = "\n".join(
        [
            "#$ TOP=/cuda/bin/..",
            "#$ CICC_PATH=/cuda/bin/../nvvm/bin",
            '#$ "$CICC_PATH/cicc" --c++17 -arch compute_90 "k/a.cpp1.ii" -o "k/a.ptx"',
            '#$ "${CICC_PATH}/cicc" -I$TOP/include $UNSET_ELSEWHERE',
        ]
    )
    steps, _ = probe.parse_dryrun(text)
    cicc = "/cuda/bin/../nvvm/bin/cicc"
    assert steps[0].argv[0] == cicc and steps[0].phase == "device-codegen"
    assert steps[1].argv == (cicc, "-I/cuda/bin/../include", "$UNSET_ELSEWHERE")
