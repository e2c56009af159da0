//! Generates prost message types from the official schemas, with no `protoc`:
//!
//! * `onnx.proto` (shipped in the pip `onnx` package) is compiled with `protox`;
//! * TensorBoard's `Event` / `Summary` come from the serialized descriptors that the pip
//!   `tensorboard` package ships inside `tensorboard/compat/proto/*_pb2.py` (it ships no
//!   `.proto` files); `extract_descriptors.py` writes each one to `<name>.pb`.
//!
//! Usage: `striate-protogen <onnx.proto dir> <descriptor dir> <out dir>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [onnx_dir, descriptor_dir, out_dir] = args.as_slice() else {
        panic!("usage: striate-protogen <onnx.proto dir> <descriptor dir> <out dir>");
    };

    let onnx = protox::compile(["onnx.proto"], [onnx_dir]).expect("compile onnx.proto");
    prost_build::Config::new()
        .out_dir(out_dir)
        .compile_fds(onnx)
        .expect("generate onnx");

    // TensorBoard: event.proto and every file it imports, dependencies first.
    let mut files = BTreeMap::new();
    load_with_dependencies(descriptor_dir, "tensorboard/compat/proto/event.proto", &mut files);
    let mut ordered = Vec::new();
    order(&files, "tensorboard/compat/proto/event.proto", &mut ordered);
    prost_build::Config::new()
        .out_dir(out_dir)
        .compile_fds(FileDescriptorSet { file: ordered })
        .expect("generate tensorboard");
}

fn load_with_dependencies(
    dir: &Path,
    name: &str,
    files: &mut BTreeMap<String, FileDescriptorProto>,
) {
    if files.contains_key(name) {
        return;
    }
    let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
    let path = dir.join(format!("{stem}.pb"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor");
    assert_eq!(file.name(), name, "{}", path.display());
    let dependencies = file.dependency.clone();
    files.insert(name.to_string(), file);
    for dependency in &dependencies {
        load_with_dependencies(dir, dependency, files);
    }
}

fn order(
    files: &BTreeMap<String, FileDescriptorProto>,
    name: &str,
    ordered: &mut Vec<FileDescriptorProto>,
) {
    if ordered.iter().any(|f| f.name() == name) {
        return;
    }
    for dependency in &files[name].dependency {
        order(files, dependency, ordered);
    }
    ordered.push(files[name].clone());
}
