//! Compiles the BPF programs under src/bpf with clang and generates their
//! libbpf-rs skeletons into OUT_DIR (never into src/).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// (name, source): each becomes `$OUT_DIR/<name>.skel.rs`.
const PROGRAMS: &[(&str, &str)] = &[
    ("conns", "src/bpf/conns.bpf.c"),
    ("cost", "src/bpf/cost.bpf.c"),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let vmlinux_dir = PathBuf::from("src/bpf").join(&arch);
    if !vmlinux_dir.join("vmlinux.h").exists() {
        panic!(
            "no vmlinux.h for target architecture {arch}: generate one with \
             `bpftool btf dump file /sys/kernel/btf/vmlinux format c > src/bpf/{arch}/vmlinux.h`"
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        vmlinux_dir.join("vmlinux.h").display()
    );
    println!("cargo:rerun-if-changed=src/bpf/conns.h");
    println!("cargo:rerun-if-changed=src/bpf/cost.h");
    println!("cargo:rerun-if-changed=src/bpf/cgroup.h");
    println!("cargo:rerun-if-changed=src/bpf/cgroup.bpf.h");
    // bpf_tracing.h needs the target architecture to read system call
    // arguments out of struct pt_regs.
    let target_arch_define = match arch.as_str() {
        "x86_64" => "-D__TARGET_ARCH_x86",
        "aarch64" => "-D__TARGET_ARCH_arm64",
        "riscv64" => "-D__TARGET_ARCH_riscv",
        "s390x" => "-D__TARGET_ARCH_s390",
        "powerpc64" => "-D__TARGET_ARCH_powerpc",
        other => panic!("no BPF target architecture define for {other}"),
    };

    for (name, src) in PROGRAMS {
        println!("cargo:rerun-if-changed={src}");
        let skel = out.join(format!("{name}.skel.rs"));
        SkeletonBuilder::new()
            .source(src)
            .clang_args([
                "-I".as_ref(),
                vmlinux_dir.as_os_str(),
                "-Isrc/bpf".as_ref(),
                "-Wall".as_ref(),
                "-Werror".as_ref(),
                "-O2".as_ref(),
                target_arch_define.as_ref(),
            ])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building BPF program {src}: {e:#}"));
    }
}
