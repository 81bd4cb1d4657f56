import Foundation

/// A dense float32 tensor in row-major (PyTorch contiguous) layout, e.g. NCHW for images.
/// Reference semantics: ops allocate their results, and a tensor's memory is released as soon
/// as the last reference to it goes, so activations die as early as the code lets them.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>

    /// Uninitialised storage of the given shape (64-byte aligned).
    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        let bytes = max(1, count) * 4
        let storage = ActivationPool.shared.take(bytes) ?? UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        self.data = storage.bindMemory(to: Float.self, capacity: max(1, count))
    }

    deinit {
        let bytes = max(1, count) * 4
        if !ActivationPool.shared.give(UnsafeMutableRawPointer(data), bytes) {
            data.deallocate()
        }
    }

    public static func zeros(_ shape: [Int]) -> Tensor {
        let t = Tensor(shape: shape)
        t.data.initialize(repeating: 0, count: t.count)
        return t
    }

    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    public var scalars: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    /// Same values, new shape (a copy-free view is not needed often enough to be worth aliasing).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        let t = Tensor(shape: newShape)
        precondition(t.count == count, "cannot reshape \(shape) to \(newShape)")
        t.data.update(from: data, count: count)
        return t
    }

    public func copy() -> Tensor { reshaped(shape) }

    /// Slice `range` along the first dimension.
    public func rows(_ range: Range<Int>) -> Tensor {
        let inner = count / max(1, shape[0])
        var s = shape
        s[0] = range.count
        let t = Tensor(shape: s)
        t.data.update(from: data + range.lowerBound * inner, count: range.count * inner)
        return t
    }

    /// Concatenation along the first dimension.
    public static func concat(_ parts: [Tensor]) -> Tensor {
        var s = parts[0].shape
        s[0] = parts.reduce(0) { $0 + $1.shape[0] }
        let t = Tensor(shape: s)
        var off = 0
        for p in parts {
            precondition(Array(p.shape.dropFirst()) == Array(s.dropFirst()), "concat shape mismatch")
            (t.data + off).update(from: p.data, count: p.count)
            off += p.count
        }
        return t
    }
}
