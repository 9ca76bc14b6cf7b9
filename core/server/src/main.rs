//! `chorus-core [--config FILE]`: the regional core. Same as `chorus core`.

fn main() -> std::process::ExitCode {
    chorus_core::init_logging();
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next(),
            "--help" | "-h" => {
                println!("usage: chorus-core [--config FILE]   (TOML; see core/server/README.md)");
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("chorus-core: unknown argument {other:?}; usage: chorus-core [--config FILE]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let cfg = match config {
        Some(p) => chorus_core::config::CoreConfig::load(std::path::Path::new(&p)),
        None => Ok(chorus_core::CoreConfig::default()),
    };
    match cfg.map_err(anyhow::Error::from).and_then(chorus_core::run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chorus-core: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
