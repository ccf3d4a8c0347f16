//! `cargo run -p kiln-cluster --example dry-run -- SPEC HARDWARE_CSV OUT_DIR`: the plan
//! and every node's NoCloud seed, as `kiln cluster create --dry-run` will write them.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec_file, csv_file, out] = args.as_slice() else {
        eprintln!("usage: dry-run SPEC HARDWARE_CSV OUT_DIR");
        return ExitCode::from(2);
    };
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    let run = || -> Result<(), String> {
        let spec = kiln_cluster::ClusterSpec::parse(&read(spec_file)?, spec_file)
            .map_err(|e| e.to_string())?;
        let hw = kiln_model::csv::parse_hardware_csv(csv_file, &read(csv_file)?)
            .map_err(|e| e.to_string())?;
        let r = kiln_cluster::dry_run(&spec, &hw, std::path::Path::new(out))
            .map_err(|e| e.to_string())?;
        for n in &r.plan.nodes {
            println!("{:<12} {:<15} {}", n.hostname, n.hardware.ip, n.role);
        }
        for s in &r.plan.spares {
            println!("{s:<12} spare");
        }
        println!("kube-vip: {}", r.plan.kube_vip);
        for f in &r.files {
            println!("wrote {}", f.display());
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
