//! A streaming F32 safetensors writer: the header first, then one tensor at a time.
//!
//! The safetensors crate serializes from tensors that are all in memory at once; an imported model
//! can be larger than we want to hold twice, so the header is computed from the shapes alone and each
//! tensor is produced (dequantized, un-permuted) just before its bytes are written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use super::{ModelFileError, Result};

/// The name and shape of one tensor to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Writes `specs` to `path` as F32, asking `data(i)` for the values of `specs[i]` in order.
///
/// # Returns
/// The number of parameters written.
///
/// # Errors
/// `Shape` if `data` returns the wrong number of values; any error `data` returns; I/O errors.
pub(crate) fn write_f32_safetensors(
    path: &Path,
    specs: &[TensorSpec],
    mut data: impl FnMut(usize) -> Result<Vec<f32>>,
) -> Result<u64> {
    let io = ModelFileError::io;
    let mut header = Map::new();
    // Transformers refuses safetensors files whose metadata does not name a framework.
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for spec in specs {
        let end = offset + spec.elem_count() * 4;
        header.insert(
            spec.name.clone(),
            json!({ "dtype": "F32", "shape": spec.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header =
        serde_json::to_vec(&Value::Object(header)).map_err(|source| ModelFileError::Json {
            file: "model.safetensors",
            source,
        })?;
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    header.resize(header.len().div_ceil(8) * 8, b' ');

    let file = File::create(path).map_err(io(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| out.write_all(&header))
        .map_err(io(path))?;
    let mut parameters = 0u64;
    for (i, spec) in specs.iter().enumerate() {
        let values = data(i)?;
        if values.len() != spec.elem_count() {
            return Err(ModelFileError::Shape {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                actual: vec![values.len()],
            });
        }
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&bytes).map_err(io(path))?;
        parameters += values.len() as u64;
    }
    let file = out.into_inner().map_err(|e| io(path)(e.into_error()))?;
    file.sync_all().map_err(io(path))?;
    Ok(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype, SafeTensors};

    #[test]
    fn written_tensors_read_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let specs = [
            TensorSpec::new("b.weight", &[2, 3]),
            TensorSpec::new("a", &[1]),
        ];
        let n = write_f32_safetensors(&path, &specs, |i| {
            Ok((0..specs[i].elem_count()).map(|x| x as f32 + 0.5).collect())
        })
        .unwrap();
        assert_eq!(n, 7);

        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(header_len % 8, 0);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let b = st.tensor("b.weight").unwrap();
        assert_eq!((b.dtype(), b.shape()), (Dtype::F32, &[2usize, 3][..]));
        assert_eq!(&b.data()[4..8], &1.5f32.to_le_bytes());
        assert_eq!(st.tensor("a").unwrap().data(), &0.5f32.to_le_bytes());
    }

    #[test]
    fn a_tensor_with_the_wrong_length_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [TensorSpec::new("w", &[2, 2])];
        let err = write_f32_safetensors(&dir.path().join("m"), &specs, |_| Ok(vec![0.0; 3]));
        assert!(matches!(err, Err(ModelFileError::Shape { .. })));
    }
}
