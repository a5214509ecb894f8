//! # gpt2-tutorial
//!
//! GPT-2 end to end on [candle](https://github.com/huggingface/candle), written to be read.
//! The book in `chapters/` walks through it; the examples in `examples/` are its experiments.
//!
//! ## Using it
//!
//! `use gpt2_tutorial::prelude::*;` brings what a program needs: the config, loading (a Hub id,
//! a directory or the bundled files), the model and its heads, generation, scoring, and the
//! training parts, with candle's `Device`, `DType` and `Tensor`. A program of your own:
//!
//! ```no_run
//! use gpt2_tutorial::prelude::*;
//!
//! # fn main() -> gpt2_tutorial::Result<()> {
//! let m = LoadedModel::load(&"bundled".parse()?, &Device::Cpu, DType::F32)?;
//! let lm = Gpt2LmHeadModel::from_weights(&m.weights, &m.config)?;
//! let prompt = m.tokenizer.encode("The Rust programming language is")?;
//! let out = generate(&lm, &prompt, &GenerationConfig::greedy(20))?;
//! println!("{}", m.tokenizer.decode(&out.sequences[0])?);
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! The default build (`examples`) is what the chapters' examples, the book and the benchmark
//! need. A library user can leave it out with `default-features = false` and add back what
//! they use: `parquet` (the Hub's datasets and the bundled samples, [`data`]'s readers),
//! `progress` (progress bars while training), `plot` (SVG figures of a run). `cli` is the
//! examples' flags. `cuda` builds for NVIDIA GPUs.
//!
//! ## What is not the library's API
//!
//! Three modules exist for the examples, the book and the benchmark only: `cli` (the
//! examples' shared flags), `tutorial` (what the chapters print and draw) and `workloads`
//! (the benchmark's). They are compiled only with the `examples` feature and hidden from these
//! docs: their shapes follow the chapters, not a user's program, and change with them. The
//! fast CPU paths - `kernels` (matrix products, fused ops, in-place updates) and `written_out`
//! (the training pass over plain buffers) - are the library's machinery, reached through the
//! model and [`train::TrainStep`]; they are private unless the `examples` feature is on, when
//! the benchmark and the tests reach in to time and check them one by one.
//!
//! ## The layers, top to bottom
//!
//! A module uses only modules on its own line or below it; nothing imports upwards (doc links
//! aside). Reading bottom-up follows the book; reading top-down follows an example's `main`.
//!
//! | layer | modules | what they hold |
//! |---|---|---|
//! | one import | [`prelude`] | what a program needs, re-exported from the layers below |
//! | chapters | `tutorial`, `workloads`, `cli` | what the chapters print and draw, the benchmark's workloads, the examples' shared flags (feature `examples`) |
//! | training | [`train`] | a training step in f32 or half precision, AdamW, schedules, clipping, checkpoints, fine-tuning loops |
//! | data | [`data`] | datasets read from parquet, and packing them into training sequences |
//! | loading | [`source`], [`device`] | the Hub, local directories and the bundled files; devices and dtypes |
//! | using a model | [`generation`], [`stream`], `plot` | greedy and sampled generation, next-token probabilities, scoring a text, streaming text, SVG figures (feature `plot`) |
//! | heads | [`heads`], [`loss`] | the five model classes of transformers, and their losses |
//! | the transformer | [`model`], [`cache`], [`dropout`] | GPT-2 itself, bottom-up like nanoGPT's `model.py`, its KV cache and seeded dropout: the reference |
//! | the training pass, written out | `written_out` | GPT-2's forward and backward over plain buffers, llm.c's way: what trains on the CPU |
//! | fast paths | `kernels` | CPU operations with the plain code's arithmetic: the graph's custom ops, matrix products, update passes |
//! | foundations | [`weights`], [`tokenizer`], [`config`], [`memory`], [`error`] | tensors by checkpoint name, GPT-2's BPE, `config.json`, allocation, the error type |

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod data;
pub mod device;
pub mod dropout;
pub mod error;
pub mod generation;
pub mod heads;
pub mod loss;
pub mod memory;
pub mod model;
#[cfg(feature = "plot")]
pub mod plot;
pub mod prelude;
pub mod source;
pub mod stream;
pub mod tokenizer;
pub mod train;
pub mod weights;

// The examples', the book's and the benchmark's own modules (see "What is not the library's API").
#[cfg(feature = "examples")]
#[doc(hidden)]
pub mod cli;
#[cfg(feature = "examples")]
#[doc(hidden)]
pub mod tutorial;
#[cfg(feature = "examples")]
#[doc(hidden)]
pub mod workloads;

// The machinery under the model and the training step: public only for the benchmark and the
// tests that check each path on its own.
#[cfg(feature = "examples")]
#[doc(hidden)]
pub mod kernels;
#[cfg(not(feature = "examples"))]
#[allow(dead_code, unused_imports)]
mod kernels;
#[cfg(feature = "examples")]
#[doc(hidden)]
pub mod written_out;
#[cfg(not(feature = "examples"))]
#[allow(dead_code, unused_imports)]
mod written_out;

/// candle's tensor crate, re-exported so that a program uses the version this crate was built
/// with (`gpt2_tutorial::candle_core::Tensor`) without pinning its own.
pub use candle_core;

pub use cache::KvCache;
pub use config::Gpt2Config;
pub use error::{Error, Result};
pub use model::{Gpt2LmHeadModel, Gpt2Model};
pub use source::{LoadedModel, ModelSource};
pub use tokenizer::Gpt2Tokenizer;
pub use weights::Weights;
