//! # gpt2-tutorial
//!
//! GPT-2 end to end on [candle](https://github.com/huggingface/candle), written to be read.
//! The book in `chapters/` walks through it; the examples in `examples/` are its experiments.
//!
//! - [`config`]: the hyper-parameters (`config.json`) and the four released sizes.
//! - [`model`]: the transformer itself, bottom-up like nanoGPT's `model.py`.
//! - [`heads`]: the five model classes (base, LM, sequence and token classification, QA).
//! - [`cache`]: the key/value cache for fast generation.
//! - [`weights`]: GPT-2's initialisation, loading and saving safetensors.
//! - [`source`]: the Hub, local directories and the bundled tiny model.
//! - [`tokenizer`]: GPT-2's byte-level BPE.
//! - [`generation`]: greedy and sampled generation, like transformers' `generate`;
//!   [`stream`] prints it token by token, [`next_token`] and [`greedy_loops`] take it apart.
//! - [`loss`] and [`train`]: the losses, and a training step in f32 or half precision.
//! - [`kernels`] and [`memory`]: the CPU fast paths and the allocator setting behind the
//!   benchmark figures.

pub mod architecture;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod device;
pub mod dropout;
pub mod error;
pub mod generation;
pub mod greedy_loops;
pub mod heads;
pub mod kernels;
pub mod loss;
pub mod memory;
pub mod model;
pub mod next_token;
pub mod plot;
pub mod source;
pub mod stream;
pub mod summary;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use cache::KvCache;
pub use config::Gpt2Config;
pub use error::{Error, Result};
pub use model::{Gpt2LmHeadModel, Gpt2Model};
pub use source::{LoadedModel, ModelSource};
pub use tokenizer::Gpt2Tokenizer;
pub use weights::Weights;
