//! What a program using the crate needs, in one import: `use gpt2_tutorial::prelude::*;`.
//!
//! The config, loading (a Hub id, a directory or the bundled files), the model and its heads,
//! the KV cache, generation and streaming, and the training parts - one step, AdamW, the
//! learning-rate schedule, clipping, checkpoints, the `Trainer` of chapter 7 and the LM
//! fine-tuning loop of chapter 6 - with candle's `Device`, `DType` and `Tensor` (and
//! `candle_core` itself), so that a program need not pin its own candle.

pub use crate::candle_core::{self, DType, Device, IndexOp, Tensor, D};

pub use crate::cache::KvCache;
pub use crate::config::{Gpt2Config, EOS_TOKEN_ID};
pub use crate::device::parse_device;
pub use crate::error::{Error, Result};
pub use crate::generation::{
    generate, greedy, top_k_next_tokens, Generation, GenerationConfig, Generator, NextTokenProb,
    TextScore,
};
pub use crate::heads::{
    Gpt2ForQuestionAnswering, Gpt2ForSequenceClassification, Gpt2ForTokenClassification, Gpt2Head,
    LoadReport, ModelClass,
};
pub use crate::loss::IGNORE_INDEX;
pub use crate::memory::{reuse_freed_buffers, ZeroFilledAllocator};
pub use crate::model::{Gpt2LmHeadModel, Gpt2Model};
pub use crate::source::{save_pretrained, LoadedModel, ModelSource};
pub use crate::stream::TokenOutputStream;
pub use crate::tokenizer::{EncodedBatch, Gpt2Tokenizer};
pub use crate::train::{
    clip_grad_norm, load_checkpoint, save_checkpoint, AdamW, AdamWConfig, FineTuneReport,
    FineTuneSettings, LinearSchedule, LmFineTuner, Recipe, ResumeChanges, RunDir, TaskHead,
    TrainPrecision, TrainSettings, TrainStep, Trainer, TrainingArguments,
};
pub use crate::weights::Weights;
