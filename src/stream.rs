//! Streaming text token by token, printing only whole characters.
//!
//! GPT-2's tokenizer is byte-level: one character may be split over several tokens (most emoji
//! and CJK characters are two or three). Decoding such a token alone gives U+FFFD, the
//! replacement character, instead of half a character. This stream holds tokens back until
//! their text ends in a complete character, then hands out the new text; everything it hands
//! out, concatenated, is exactly the decoding of all the tokens at once. The idea is candle's
//! `TokenOutputStream` (from text-generation-inference); the test for "complete" is ours: the
//! byte-level decoder marks an unfinished character with U+FFFD, so we wait while the pending
//! text ends in one.

use crate::{Gpt2Tokenizer, Result};

/// Turns a stream of token ids into a stream of text pieces.
#[derive(Debug)]
pub struct TokenOutputStream<'a> {
    tokenizer: &'a Gpt2Tokenizer,
    tokens: Vec<u32>,
    /// Tokens before this index have been handed out as text.
    emitted: usize,
}

impl<'a> TokenOutputStream<'a> {
    /// An empty stream decoding with `tokenizer`.
    pub fn new(tokenizer: &'a Gpt2Tokenizer) -> Self {
        Self {
            tokenizer,
            tokens: Vec::new(),
            emitted: 0,
        }
    }

    // ANCHOR: next_token
    /// Adds one token; returns the text that became complete with it, if any.
    pub fn next_token(&mut self, token: u32) -> Result<Option<String>> {
        self.tokens.push(token);
        let pending = self.tokenizer.decode(&self.tokens[self.emitted..])?;
        // Text ending in U+FFFD may be a character whose remaining bytes are still to come.
        // (A genuine U+FFFD is only delayed: it goes out with the next piece or at `finish`.)
        if pending.is_empty() || pending.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(None);
        }
        self.emitted = self.tokens.len();
        Ok(Some(pending))
    }
    // ANCHOR_END: next_token

    /// The text still held back (a character that never completed decodes as U+FFFD, as it
    /// does when decoding everything at once).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let pending = self.tokenizer.decode(&self.tokens[self.emitted..])?;
        self.emitted = self.tokens.len();
        Ok((!pending.is_empty()).then_some(pending))
    }

    /// Every token seen so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The text of every token seen so far, decoded at once.
    pub fn decode_all(&self) -> Result<String> {
        self.tokenizer.decode(&self.tokens)
    }
}
