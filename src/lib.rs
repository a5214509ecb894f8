//! # gpt2-tutorial
//!
//! GPT-2 end to end on [candle](https://github.com/huggingface/candle), written to be read.
//! The book in `chapters/` walks through it; the examples in `examples/` are its experiments.
//!
//! ## The layers, top to bottom
//!
//! A module uses only modules on its own line or below it; nothing imports upwards (doc links
//! aside). Reading bottom-up follows the book; reading top-down follows an example's `main`.
//!
//! | layer | modules | what they hold |
//! |---|---|---|
//! | chapters | [`tutorial`], [`workloads`], [`cli`] | what the chapters print and draw, the benchmark's workloads, the examples' shared flags |
//! | training | [`train`] | a training step in f32 or half precision, AdamW, schedules, clipping, checkpoints |
//! | data | [`data`] | datasets read from parquet, and packing them into training sequences |
//! | loading | [`source`], [`device`] | the Hub, local directories and the bundled files; devices and dtypes |
//! | using a model | [`generation`], [`stream`], [`plot`] | greedy and sampled generation, streaming text, SVG figures |
//! | heads | [`heads`], [`loss`] | the five model classes of transformers, and their losses |
//! | the transformer | [`model`], [`cache`], [`dropout`] | GPT-2 itself, bottom-up like nanoGPT's `model.py`, its KV cache and seeded dropout: the reference |
//! | the training pass, written out | [`written_out`] | GPT-2's forward and backward over plain buffers, llm.c's way: what trains on the CPU |
//! | fast paths | [`kernels`] | CPU operations with the plain code's arithmetic: the graph's custom ops, matrix products, update passes |
//! | foundations | [`weights`], [`tokenizer`], [`config`], [`memory`], [`error`] | tensors by checkpoint name, GPT-2's BPE, `config.json`, allocation, the error type |

pub mod cache;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dropout;
pub mod error;
pub mod generation;
pub mod heads;
pub mod kernels;
pub mod loss;
pub mod memory;
pub mod model;
pub mod plot;
pub mod source;
pub mod stream;
pub mod tokenizer;
pub mod train;
pub mod tutorial;
pub mod weights;
pub mod workloads;
pub mod written_out;

pub use cache::KvCache;
pub use config::Gpt2Config;
pub use error::{Error, Result};
pub use model::{Gpt2LmHeadModel, Gpt2Model};
pub use source::{LoadedModel, ModelSource};
pub use tokenizer::Gpt2Tokenizer;
pub use weights::Weights;
