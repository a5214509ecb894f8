//! What the tutorial's chapters print and draw: the architecture report and module tree of
//! chapter 1, the next-token table, chart and greedy loops of chapter 3, and chapter 6's
//! measurements of why pure-f16 fine-tuning collapses. These sit on top of the
//! library (they use the model, the heads and generation) and nothing below imports them.

/// The prompt the tutorial continues in chapters 2 and 3, and runs through every head and
/// its loss in chapters 4 and 5.
pub const TUTORIAL_PROMPT: &str = "Hello, I'm a language model,";

pub mod architecture;
pub mod f16_collapse;
pub mod greedy_loops;
pub mod module_tree;
pub mod next_token;
pub mod top_tokens;
