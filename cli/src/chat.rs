//! `chorus chat`: a terminal conversation with the local engine, streamed token by token.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use chorus_engine::chat_template::ChatMessage;
use chorus_engine::engine::{Engine, GenerateError};
use chorus_engine::sampler::SamplingParams;

/// Most tokens a terminal conversation keeps.
const MAX_CHAT_CONTEXT: usize = 16_384;

/// Runs the read–generate loop until end of input or `/exit`.
pub fn run(engine: &Engine, params: &SamplingParams, system: Option<String>) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut history: Vec<ChatMessage> =
        system.map(|content| ChatMessage { role: "system".into(), content }).into_iter().collect();
    // The KV cache is allocated once for the whole conversation; long-context models are capped
    // so a chat does not reserve tens of GiB.
    let ctx = engine.model.cfg.ctx_len.min(MAX_CHAT_CONTEXT);
    let mut session = engine.session(ctx)?;
    if interactive {
        eprintln!(
            "chorus chat — {} ({}), /reset to start over, /exit or Ctrl-D to quit",
            engine.isa.name(),
            engine.pool.n_threads()
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.retain(|m| m.role == "system");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage { role: "user".into(), content: text.to_string() });
        // Keep the conversation inside the context: drop the oldest exchange (a user turn and
        // the answer to it) until the prompt fits, so the history never starts mid-exchange.
        let prompt = loop {
            let p = match engine.chat_prompt(&history) {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            let turns = history.iter().filter(|m| m.role != "system").count();
            if p.len() + params.max_tokens as usize <= ctx || turns <= 1 {
                break Ok(p);
            }
            let first = history.iter().position(|m| m.role != "system").unwrap_or(0);
            history.remove(first);
            if history.get(first).is_some_and(|m| m.role == "assistant") {
                history.remove(first);
            }
        };
        let prompt = match prompt {
            Ok(p) => p,
            Err(e) => {
                eprintln!("chorus: {e}");
                history.pop();
                continue;
            }
        };
        let stdout = std::io::stdout();
        let result = session.generate(&prompt, params, &mut |s| {
            let mut o = stdout.lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        });
        println!();
        match result {
            Ok(g) => history.push(ChatMessage { role: "assistant".into(), content: g.text }),
            Err(e @ GenerateError::PromptTooLong { .. }) => {
                eprintln!("chorus: {e}; use /reset");
                history.pop();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
