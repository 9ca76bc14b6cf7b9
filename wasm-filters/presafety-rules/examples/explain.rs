//! Debug helper: `cargo run --example explain -- "some prompt"` prints the
//! normalised text and the finding (if any). Reads stdin lines if no argument.
use std::io::BufRead;

fn show(p: &str) {
    println!("{p:?}\n  normalized: {}", chorus_presafety_rules::normalize(p));
    if std::env::var_os("CONCEPTS").is_some() {
        for (w, cs) in chorus_presafety_rules::debug_concepts(p) {
            println!("    {w:<16} {}", cs.join(" "));
        }
    }
    match chorus_presafety_rules::scan(p) {
        Some(f) => println!("  -> BLOCK {} [{}] obfuscated={}", f.rule, f.category.as_str(), f.obfuscated),
        None => println!("  -> pass"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            show(&line);
        }
    } else {
        show(&args.join(" "));
    }
}
