//! `chorus-test-core --config FILE`: `chorus_core::run` as a process of its own for tests
//! that kill a core.

fn main() -> anyhow::Result<()> {
    chorus_process::init_logging(chorus_process::LogFormat::Text);
    let args: Vec<String> = std::env::args().collect();
    let [_, flag, path] = &args[..] else { anyhow::bail!("usage: chorus-test-core --config FILE") };
    anyhow::ensure!(flag == "--config", "usage: chorus-test-core --config FILE");
    chorus_core::run(chorus_core::CoreConfig::load(std::path::Path::new(path))?)
}
