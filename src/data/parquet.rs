//! Reading columns of a parquet file, the format Hugging Face stores datasets in.
//!
//! A parquet file is a table split into *row groups*; within a row group each column is stored
//! on its own (a *column chunk*), compressed, with a *definition level* per row that says
//! whether the value is there or null. So reading one column never touches the others, and
//! the footer - the file's metadata - tells each column's name, type and compression before a
//! byte of data is read. That is where the checks below look first.
//!
//! We use the `parquet` crate's column readers (no Arrow): a column of text comes out as
//! strings, a column of integers as `i64`s. Chapter 6 reads the jokes' `Joke` column, chapter
//! 7 IMDB's `text` and `label`. Rows whose text is null or empty are skipped and counted.

use std::fs::File;
use std::path::{Path, PathBuf};

use ::parquet::basic::{Compression, ConvertedType, LogicalType, Type as PhysicalType};
use ::parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use ::parquet::data_type::DataType;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::schema::types::ColumnDescriptor;

use crate::{Error, Result};

/// What a column must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text: parquet's `BYTE_ARRAY` holding UTF-8 (pandas' `object`/`string`, Arrow's `string`).
    Text,
    /// Integers: parquet's `INT32` or `INT64`, read as `i64` (a class label, an id).
    Int,
}

impl ColumnKind {
    fn expected(self) -> &'static str {
        match self {
            Self::Text => "strings",
            Self::Int => "integers",
        }
    }
}

/// The values of one column, one entry per row kept.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// A [`ColumnKind::Text`] column: non-empty UTF-8 strings.
    Text(Vec<String>),
    /// A [`ColumnKind::Int`] column, widened to `i64`.
    Int(Vec<i64>),
}

/// Named columns read from parquet, their rows aligned.
///
/// A row is kept only when every text column has a non-empty string and every integer column
/// a value; the others are counted in [`Columns::skipped`], so row `i` of each column belongs
/// to the same record.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    /// The file(s) the rows came from.
    pub files: Vec<PathBuf>,
    /// Rows in the file(s), kept or not.
    pub rows_read: usize,
    /// Rows skipped because a wanted value was null or an empty string.
    pub skipped: usize,
    columns: Vec<(String, ColumnValues)>,
}

impl Columns {
    /// Rows kept.
    pub fn len(&self) -> usize {
        self.rows_read - self.skipped
    }

    /// Whether no row was kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, name: &str) -> Result<&ColumnValues> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::MissingColumn {
                path: self.files.first().cloned().unwrap_or_default(),
                column: name.to_string(),
                available: self.columns.iter().map(|(n, _)| n.clone()).collect(),
            })
    }

    /// The text column `name` (one that was asked for as [`ColumnKind::Text`]).
    pub fn text(&self, name: &str) -> Result<&[String]> {
        match self.get(name)? {
            ColumnValues::Text(v) => Ok(v),
            ColumnValues::Int(_) => Err(self.kind_error(name, "integers", ColumnKind::Text)),
        }
    }

    /// The integer column `name` (one that was asked for as [`ColumnKind::Int`]).
    pub fn ints(&self, name: &str) -> Result<&[i64]> {
        match self.get(name)? {
            ColumnValues::Int(v) => Ok(v),
            ColumnValues::Text(_) => Err(self.kind_error(name, "strings", ColumnKind::Int)),
        }
    }

    /// Takes the text column `name` out, leaving an empty one.
    pub fn take_text(&mut self, name: &str) -> Result<Vec<String>> {
        self.text(name)?;
        let slot = self.columns.iter_mut().find(|(n, _)| n == name);
        match slot {
            Some((_, ColumnValues::Text(v))) => Ok(std::mem::take(v)),
            _ => Ok(Vec::new()),
        }
    }

    fn kind_error(&self, name: &str, found: &str, want: ColumnKind) -> Error {
        Error::ColumnType {
            path: self.files.first().cloned().unwrap_or_default(),
            column: name.to_string(),
            found: found.to_string(),
            expected: want.expected(),
        }
    }

    /// Appends the rows of `other`, which must have been read with the same columns.
    pub fn append(&mut self, other: Columns) -> Result<()> {
        for (name, values) in other.columns {
            let mine = self.columns.iter_mut().find(|(n, _)| *n == name);
            match (mine, values) {
                (Some((_, ColumnValues::Text(a))), ColumnValues::Text(b)) => a.extend(b),
                (Some((_, ColumnValues::Int(a))), ColumnValues::Int(b)) => a.extend(b),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "cannot append column `{name}`: the two reads asked for different columns"
                    )))
                }
            }
        }
        self.files.extend(other.files);
        self.rows_read += other.rows_read;
        self.skipped += other.skipped;
        Ok(())
    }
}

/// The `.parquet` files at `path`: the file itself, or every `.parquet` file under a directory
/// (recursively, sorted by path, as a Hub dataset's `data/train-00000-of-00002.parquet`, ...).
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(Error::MissingDataFile {
            path: path.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    collect_parquet(path, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(Error::NoParquetFiles {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<SerializedFileReader<File>> {
    if !path.is_file() {
        return Err(Error::MissingDataFile {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    SerializedFileReader::new(file).map_err(|e| bad(path, e))
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadParquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The names of the top-level columns of the parquet file at `path`.
pub fn column_names(path: &Path) -> Result<Vec<String>> {
    let reader = open(path)?;
    Ok(top_level_names(&reader))
}

fn top_level_names(reader: &SerializedFileReader<File>) -> Vec<String> {
    let schema = reader.metadata().file_metadata().schema_descr();
    schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// Reads the columns `wanted` (name and kind) of every file in `files`, in order.
pub fn read_columns_of(files: &[PathBuf], wanted: &[(&str, ColumnKind)]) -> Result<Columns> {
    let mut all: Option<Columns> = None;
    for file in files {
        let cols = read_columns(file, wanted)?;
        match all.as_mut() {
            None => all = Some(cols),
            Some(all) => all.append(cols)?,
        }
    }
    all.ok_or_else(|| Error::InvalidArgument("no parquet files were given to read".into()))
}

/// Reads the columns `wanted` (name and kind) of the parquet file at `path`.
///
/// Everything that can be checked from the footer is checked before any data is read: each
/// column exists, is a plain (not nested) column of the right type, and is compressed with a
/// codec this build reads (none or snappy).
pub fn read_columns(path: &Path, wanted: &[(&str, ColumnKind)]) -> Result<Columns> {
    let reader = open(path)?;
    let metadata = reader.metadata();
    let schema = metadata.file_metadata().schema_descr();

    // Footer checks: which leaf column each wanted name is, and its type and compression.
    let mut leaves = Vec::with_capacity(wanted.len());
    for &(name, kind) in wanted {
        let leaf = (0..schema.num_columns()).find(|&i| schema.column(i).path().parts() == [name]);
        let Some(leaf) = leaf else {
            let available = top_level_names(&reader);
            if available.iter().any(|n| n == name) {
                // A top-level name with no leaf of that path: a list or struct column.
                return Err(Error::ColumnType {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    found: "nested values (a list or struct)".into(),
                    expected: kind.expected(),
                });
            }
            return Err(Error::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available,
            });
        };
        check_type(path, &schema.column(leaf), kind)?;
        for rg in metadata.row_groups() {
            check_compression(path, name, rg.column(leaf).compression())?;
        }
        leaves.push(leaf);
    }

    // Read each wanted column of each row group, one `Option` per row (None: null).
    let mut raw: Vec<Raw> = wanted
        .iter()
        .map(|&(_, kind)| match kind {
            ColumnKind::Text => Raw::Text(Vec::new()),
            ColumnKind::Int => Raw::Int(Vec::new()),
        })
        .collect();
    let mut rows_read = 0usize;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| bad(path, e))?;
        let rows = usize::try_from(group.metadata().num_rows()).map_err(|e| bad(path, e))?;
        rows_read += rows;
        for ((&leaf, out), &(name, _)) in leaves.iter().zip(raw.iter_mut()).zip(wanted) {
            let column = group.get_column_reader(leaf).map_err(|e| bad(path, e))?;
            let max_def = schema.column(leaf).max_def_level();
            match (column, out) {
                (ColumnReader::ByteArrayColumnReader(r), Raw::Text(out)) => {
                    for v in read_chunk(r, rows, max_def).map_err(|e| bad(path, e))? {
                        let s = match v {
                            None => None,
                            Some(bytes) => {
                                Some(String::from_utf8(bytes.data().to_vec()).map_err(|_| {
                                    bad(path, format!("column `{name}` holds invalid UTF-8"))
                                })?)
                            }
                        };
                        out.push(s);
                    }
                }
                (ColumnReader::Int64ColumnReader(r), Raw::Int(out)) => {
                    out.extend(read_chunk(r, rows, max_def).map_err(|e| bad(path, e))?);
                }
                (ColumnReader::Int32ColumnReader(r), Raw::Int(out)) => {
                    let values = read_chunk(r, rows, max_def).map_err(|e| bad(path, e))?;
                    out.extend(values.into_iter().map(|v| v.map(i64::from)));
                }
                // check_type ruled every other pairing out.
                _ => {
                    return Err(bad(
                        path,
                        "a column's type changed between the footer and its data",
                    ))
                }
            }
        }
    }
    for (r, &(name, _)) in raw.iter().zip(wanted) {
        if r.len() != rows_read {
            return Err(bad(
                path,
                format!(
                    "column `{name}` has {} values for {rows_read} rows",
                    r.len()
                ),
            ));
        }
    }

    // Keep the rows where every wanted value is there and no text is empty.
    let keep: Vec<bool> = (0..rows_read)
        .map(|i| {
            raw.iter().all(|r| match r {
                Raw::Text(v) => v[i].as_ref().is_some_and(|s| !s.is_empty()),
                Raw::Int(v) => v[i].is_some(),
            })
        })
        .collect();
    let skipped = keep.iter().filter(|k| !**k).count();
    let columns = wanted
        .iter()
        .zip(raw)
        .map(|(&(name, _), r)| {
            let values = match r {
                Raw::Text(v) => ColumnValues::Text(
                    v.into_iter()
                        .zip(&keep)
                        .filter_map(|(s, &k)| if k { s } else { None })
                        .collect(),
                ),
                Raw::Int(v) => ColumnValues::Int(
                    v.into_iter()
                        .zip(&keep)
                        .filter_map(|(x, &k)| if k { x } else { None })
                        .collect(),
                ),
            };
            (name.to_string(), values)
        })
        .collect();
    Ok(Columns {
        files: vec![path.to_path_buf()],
        rows_read,
        skipped,
        columns,
    })
}

/// One column as read, nulls included.
enum Raw {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

impl Raw {
    fn len(&self) -> usize {
        match self {
            Raw::Text(v) => v.len(),
            Raw::Int(v) => v.len(),
        }
    }
}

/// All values of one column chunk: `None` where the definition level says null.
fn read_chunk<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    rows: usize,
    max_def: i16,
) -> ::parquet::errors::Result<Vec<Option<T::T>>> {
    let mut defs = Vec::with_capacity(rows);
    let mut values = Vec::with_capacity(rows);
    let mut read = 0;
    while read < rows {
        let (records, _, _) =
            reader.read_records(rows - read, Some(&mut defs), None, &mut values)?;
        if records == 0 {
            break;
        }
        read += records;
    }
    if max_def == 0 {
        // A required column: no levels are stored, every row has a value.
        return Ok(values.into_iter().map(Some).collect());
    }
    let mut values = values.into_iter();
    Ok(defs
        .into_iter()
        .map(|d| if d == max_def { values.next() } else { None })
        .collect())
}

fn check_type(path: &Path, col: &ColumnDescriptor, kind: ColumnKind) -> Result<()> {
    let found = describe_type(col);
    let wrong = |found: String| Error::ColumnType {
        path: path.to_path_buf(),
        column: col.name().to_string(),
        found,
        expected: kind.expected(),
    };
    if col.max_rep_level() > 0 {
        return Err(wrong("lists of values".into()));
    }
    let ok = match kind {
        ColumnKind::Text => col.physical_type() == PhysicalType::BYTE_ARRAY && !is_binary(col),
        ColumnKind::Int => {
            matches!(
                col.physical_type(),
                PhysicalType::INT32 | PhysicalType::INT64
            ) && !is_non_integer_annotation(col)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(wrong(found))
    }
}

/// A `BYTE_ARRAY` annotated as something other than text (a decimal, a BSON document, ...).
/// Unannotated byte arrays are read as text and checked to be UTF-8.
fn is_binary(col: &ColumnDescriptor) -> bool {
    match col.logical_type_ref() {
        Some(LogicalType::String | LogicalType::Json | LogicalType::Enum) => false,
        Some(_) => true,
        None => !matches!(
            col.converted_type(),
            ConvertedType::NONE | ConvertedType::UTF8 | ConvertedType::JSON | ConvertedType::ENUM
        ),
    }
}

/// An integer column that holds dates, times or decimals.
fn is_non_integer_annotation(col: &ColumnDescriptor) -> bool {
    match col.logical_type_ref() {
        Some(LogicalType::Integer { .. }) | None => false,
        Some(_) => true,
    }
}

fn describe_type(col: &ColumnDescriptor) -> String {
    let physical = col.physical_type();
    match col.logical_type_ref() {
        Some(logical) => format!("{physical} values annotated {logical:?}"),
        None if physical == PhysicalType::BYTE_ARRAY => "strings".into(),
        None => match physical {
            PhysicalType::BOOLEAN => "booleans".into(),
            PhysicalType::FLOAT | PhysicalType::DOUBLE => "floating-point numbers".into(),
            PhysicalType::INT32 | PhysicalType::INT64 => "integers".into(),
            other => format!("{other} values"),
        },
    }
}

fn check_compression(path: &Path, column: &str, codec: Compression) -> Result<()> {
    let name = match codec {
        Compression::UNCOMPRESSED | Compression::SNAPPY => return Ok(()),
        Compression::GZIP(_) => "gzip",
        Compression::LZO => "LZO",
        Compression::BROTLI(_) => "brotli",
        Compression::LZ4 => "LZ4",
        Compression::ZSTD(_) => "zstd",
        Compression::LZ4_RAW => "LZ4 (raw)",
    };
    Err(Error::UnsupportedCompression {
        path: path.to_path_buf(),
        column: column.to_string(),
        codec: name.to_string(),
    })
}
