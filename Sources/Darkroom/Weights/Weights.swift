import Foundation

/// The weights of one model component (e.g. `unet/`), possibly sharded over several safetensors
/// files. Modules fetch tensors by their diffusers key names through a `WeightScope`; every fetch
/// checks the shape, and what was never fetched can be listed afterwards.
public final class Weights: @unchecked Sendable {
    public let files: [SafetensorsFile]
    /// Where each key lives.
    private let location: [String: Int]
    private var used = Set<String>()
    private let lock = NSLock()
    /// A name for messages (the component folder).
    public let label: String
    /// Keys served from differently named (or sliced) tensors; empty for diffusers folders.
    private let views: [String: WeightView]

    public init(files: [SafetensorsFile], label: String) throws {
        self.files = files
        self.label = label
        var loc: [String: Int] = [:]
        for (i, f) in files.enumerated() {
            for name in f.entries.keys {
                if loc[name] != nil {
                    throw DarkroomError.invalidFile(path: f.path, reason: "tensor '\(name)' also appears in \(files[loc[name]!].path)")
                }
                loc[name] = i
            }
        }
        location = loc
        views = [:]
    }

    /// Weights that modules ask for by diffusers names while the file stores them under other
    /// names or fused (a single-file LDM checkpoint): every key in `views` is served from the
    /// view's tensor in `file`. Views are checked against the file's entries here.
    public init(file: SafetensorsFile, views: [String: WeightView], label: String) throws {
        files = [file]
        self.label = label
        for (key, v) in views {
            guard let e = file.entries[v.key] else {
                throw DarkroomError.weight(path: file.path, key: v.key, reason: "missing (needed for '\(key)')")
            }
            let count = v.shape.reduce(1, *)
            guard v.offset >= 0, v.offset + count <= e.count else {
                throw DarkroomError.weight(path: file.path, key: v.key, reason: "shape \(e.shape) is too small for '\(key)' \(v.shape)")
            }
        }
        self.views = views
        location = Dictionary(uniqueKeysWithValues: views.keys.map { ($0, 0) })
    }

    /// Finds the safetensors weights of a component folder: `<stem>.safetensors`, a sharded
    /// `<stem>.safetensors.index.json`, or a `.fp16` / `.bf16` variant of either.
    public static func load(componentFolder folder: URL, stem: String) throws -> Weights {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder.path, isDirectory: &isDir), isDir.boolValue else {
            throw DarkroomError.fileNotFound(path: folder.path)
        }
        for variant in ["", ".fp16", ".bf16"] {
            let single = folder.appendingPathComponent("\(stem)\(variant).safetensors")
            if fm.fileExists(atPath: single.path) {
                return try Weights(files: [SafetensorsFile(url: single)], label: folder.lastPathComponent)
            }
            let index = folder.appendingPathComponent("\(stem)\(variant).safetensors.index.json")
            if fm.fileExists(atPath: index.path) {
                let cfg = try ConfigFile.load(index)
                guard case .object(let map)? = cfg.value("weight_map") else {
                    throw DarkroomError.invalidConfig(path: index.path, key: "weight_map", reason: "missing or not an object")
                }
                var shardNames: [String] = []
                for (_, v) in map {
                    guard case .string(let s) = v, !s.contains("/"), !s.hasPrefix(".") else {
                        throw DarkroomError.invalidConfig(path: index.path, key: "weight_map", reason: "shard names must be plain file names")
                    }
                    if !shardNames.contains(s) { shardNames.append(s) }
                }
                let files = try shardNames.sorted().map { try SafetensorsFile(url: folder.appendingPathComponent($0)) }
                return try Weights(files: files, label: folder.lastPathComponent)
            }
        }
        let bin = folder.appendingPathComponent("\(stem).bin")
        if fm.fileExists(atPath: bin.path) {
            throw DarkroomError.invalidFile(path: bin.path, reason: "PyTorch pickle weights are not loaded (they can run code); convert the model to safetensors")
        }
        throw DarkroomError.fileNotFound(path: folder.appendingPathComponent("\(stem).safetensors").path)
    }

    public var keys: [String] { Array(location.keys) }

    public func has(_ key: String) -> Bool { location[key] != nil }

    public func entry(_ key: String) -> SafetensorsFile.Entry? {
        guard let i = location[key] else { return nil }
        if let v = views[key] { return v.entry(in: files[i]) }
        return files[i].entries[key]
    }

    func path(of key: String) -> String {
        if let i = location[key] { return files[i].path }
        return files.first?.path ?? label
    }

    /// The tensor under `key` as float32, checked against `shape`.
    public func tensor(_ key: String, shape: [Int]) throws -> Tensor {
        if let v = views[key] { return try viewTensor(key, v, shape: shape) }
        guard let i = location[key], let e = files[i].entries[key] else {
            let why = views.isEmpty ? "missing" : "missing: no tensor of this checkpoint maps to it"
            throw DarkroomError.weight(path: files.first?.path ?? label, key: key, reason: why)
        }
        // Accept singleton dimensions that PyTorch layouts differ in (1x1 conv vs linear).
        if e.shape != shape {
            guard e.count == shape.reduce(1, *), e.shape.filter({ $0 != 1 }) == shape.filter({ $0 != 1 }) else {
                throw DarkroomError.weight(path: files[i].path, key: key, reason: "shape \(e.shape) does not match the config, which needs \(shape)")
            }
        }
        lock.lock(); used.insert(key); lock.unlock()
        let t = try files[i].tensor(key)
        return shape == t.shape ? t : t.reshaped(shape)
    }

    /// `tensor(_:shape:)` for a key served by a view: the same shape rule, the view's name in messages.
    private func viewTensor(_ key: String, _ v: WeightView, shape: [Int]) throws -> Tensor {
        let file = files[0]
        guard let e = v.entry(in: file), let raw = file.rawBytes(v.key) else {
            throw DarkroomError.weight(path: file.path, key: v.key, reason: "missing (needed for '\(key)')")
        }
        if e.shape != shape {
            guard e.count == shape.reduce(1, *), e.shape.filter({ $0 != 1 }) == shape.filter({ $0 != 1 }) else {
                throw DarkroomError.weight(path: file.path, key: v.key, reason: "\(v.describe) has shape \(e.shape), but '\(key)' needs \(shape)")
            }
        }
        lock.lock(); used.insert(key); lock.unlock()
        let t = Tensor(shape: shape)
        let size = e.dtype.byteSize
        let slice = UnsafeRawBufferPointer(rebasing: raw[(v.offset * size)..<((v.offset + e.count) * size)])
        convertToFloat(slice, dtype: e.dtype, count: e.count, into: t.data)
        file.releasePages(slice)
        return t
    }

    /// Marks keys as intentionally ignored (e.g. the VAE encoder when only decoding).
    public func ignore(where predicate: (String) -> Bool) {
        lock.lock(); defer { lock.unlock() }
        for k in location.keys where predicate(k) { used.insert(k) }
    }

    /// Keys present in the files that no module fetched or ignored.
    public var unusedKeys: [String] {
        lock.lock(); defer { lock.unlock() }
        return location.keys.filter { !used.contains($0) }.sorted()
    }

    public func scope(_ prefix: String) -> WeightScope { WeightScope(weights: self, prefix: prefix) }
}

/// A view of `Weights` under a key prefix, mirroring PyTorch's module tree:
/// `w["down_blocks.0"]["resnets.1"].tensor("conv1.weight", ...)`.
public struct WeightScope: Sendable {
    public let weights: Weights
    public let prefix: String

    public subscript(_ child: String) -> WeightScope {
        WeightScope(weights: weights, prefix: key(child))
    }

    public func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "." + name }

    public func has(_ name: String) -> Bool { weights.has(key(name)) }

    /// How a packed weight should be stored: Float16 when the file holds Float16 (no precision is
    /// lost and memory halves), Float32 otherwise (BF16's range does not fit Float16).
    public func storage(_ name: String) -> PackedMatrix.Storage {
        weights.entry(key(name))?.dtype == .f16 ? .float16 : .float32
    }

    public func tensor(_ name: String, _ shape: [Int]) throws -> Tensor {
        try weights.tensor(key(name), shape: shape)
    }

    /// The first of several spellings that exists (e.g. `to_q` or legacy `query`).
    public func firstPresent(_ names: [String]) -> String? { names.first { has($0 + ".weight") } }
}

/// A tensor as a module sees it, cut from a stored tensor: `shape.product` consecutive elements
/// of the file's tensor `key`, starting at element `offset`. Renames (offset 0, the stored
/// shape), row slices of fused weights (OpenCLIP's q/k/v `in_proj_weight`) and reshapes (LDM
/// 1x1-conv attention weights read as Linear) are all views; the bytes stay in the mapping.
public struct WeightView: Sendable, Equatable {
    public var key: String
    public var shape: [Int]
    public var offset: Int

    public init(key: String, shape: [Int], offset: Int = 0) {
        self.key = key
        self.shape = shape
        self.offset = offset
    }

    /// The view as an entry of `file` (byte range narrowed to the view), nil if `key` is absent.
    func entry(in file: SafetensorsFile) -> SafetensorsFile.Entry? {
        guard let e = file.entries[key] else { return nil }
        let size = e.dtype.byteSize
        let begin = e.begin + offset * size
        return SafetensorsFile.Entry(dtype: e.dtype, shape: shape, begin: begin, end: begin + shape.reduce(1, *) * size)
    }

    var describe: String { offset == 0 ? "'\(key)'" : "'\(key)' from element \(offset)" }
}
