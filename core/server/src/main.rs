//! `chorus-core [--config FILE] [--log-format text|json]`: the regional core. Same as
//! `chorus core`.

const USAGE: &str = "usage: chorus-core [--config FILE] [--log-format text|json]";

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut log_format = chorus_process::LogFormat::Text;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next(),
            "--log-format" => match args.next().as_deref().map(str::parse) {
                Some(Ok(f)) => log_format = f,
                Some(Err(e)) => {
                    eprintln!("chorus-core: --log-format: {e}");
                    return std::process::ExitCode::from(2);
                }
                None => {
                    eprintln!("chorus-core: --log-format needs a value; {USAGE}");
                    return std::process::ExitCode::from(2);
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}   (TOML; see core/server/README.md)");
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("chorus-core: unknown argument {other:?}; {USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    chorus_process::init_logging(log_format);
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
