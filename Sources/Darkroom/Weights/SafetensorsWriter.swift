import Foundation

/// Writes safetensors files (float32 or float16 data), e.g. for converted checkpoints and tests.
public enum SafetensorsWriter {
    public struct Item {
        public var name: String
        public var shape: [Int]
        public var dtype: SafetensorsDType
        public var bytes: [UInt8]
        public init(name: String, shape: [Int], dtype: SafetensorsDType, bytes: [UInt8]) {
            self.name = name; self.shape = shape; self.dtype = dtype; self.bytes = bytes
        }
        /// A float32 tensor stored as `dtype` (F32 or F16).
        public init(name: String, tensor: Tensor, dtype: SafetensorsDType = .f32) {
            self.name = name
            shape = tensor.shape
            self.dtype = dtype
            var out = [UInt8]()
            out.reserveCapacity(tensor.count * dtype.byteSize)
            for i in 0..<tensor.count {
                switch dtype {
                case .f16: withUnsafeBytes(of: Float16(tensor[i]).bitPattern.littleEndian) { out.append(contentsOf: $0) }
                case .bf16: withUnsafeBytes(of: UInt16(tensor[i].bitPattern >> 16).littleEndian) { out.append(contentsOf: $0) }
                default: withUnsafeBytes(of: tensor[i].bitPattern.littleEndian) { out.append(contentsOf: $0) }
                }
            }
            bytes = out
        }
    }

    /// Serialises items (in the given order) with optional string metadata.
    public static func data(_ items: [Item], metadata: [String: String] = [:]) -> Data {
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let kv = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            parts.append("\"__metadata__\":{\(kv.joined(separator: ","))}")
        }
        var offset = 0
        for it in items {
            let shape = it.shape.map(String.init).joined(separator: ",")
            parts.append("\(jsonString(it.name)):{\"dtype\":\"\(it.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + it.bytes.count)]}")
            offset += it.bytes.count
        }
        header += parts.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }  // pad with spaces so data is 8-byte aligned
        var out = Data()
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        for it in items { out.append(contentsOf: it.bytes) }
        return out
    }

    public static func write(_ items: [Item], metadata: [String: String] = [:], to url: URL) throws {
        do { try data(items, metadata: metadata).write(to: url, options: .atomic) } catch {
            throw DarkroomError.io(path: url.path, reason: "cannot write: \(error.localizedDescription)")
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = ""
        JSONText.quote(s, into: &out)
        return out
    }
}
