import Foundation

/// Byte-pair encoding as `tokenizers`' `BPE` model does it for CLIP: `end_of_word_suffix`
/// `</w>` on the last symbol of a word, an empty `continuing_subword_prefix`, no dropout,
/// `fuse_unk` off, merges applied lowest rank first (leftmost on ties), each merge looked up
/// by the ids of its two parts.
struct CLIPBPE: Sendable {
    struct Merge: Sendable { let rank: Int32; let id: Int32 }

    /// Merges keyed by `left id << 32 | right id`.
    let merges: [UInt64: Merge]
    /// Id of each byte's character, and of the character + `</w>` (for the last byte);
    /// -1 when the vocabulary lacks it.
    let byteIDs: [Int32]
    let byteEndIDs: [Int32]
    /// Used for characters missing from the vocabulary (never with the real CLIP vocabulary,
    /// which covers all 512 byte symbols); without one they are dropped, as in `tokenizers`.
    let unkID: Int32?
    private let cache = WordCache()

    static let endOfWord = "</w>"

    /// `merges` are (left, right) token pairs in rank order. Throws the index of a merge whose
    /// parts or result are missing from `vocab` (`tokenizers` refuses those too).
    init(vocab: [String: Int], merges pairs: [(String, String)], unkID: Int?) throws(MergeError) {
        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(pairs.count)
        for (rank, (a, b)) in pairs.enumerated() {
            guard let ia = vocab[a] else { throw MergeError(index: rank, pair: (a, b), token: a) }
            guard let ib = vocab[b] else { throw MergeError(index: rank, pair: (a, b), token: b) }
            guard let merged = vocab[a + b] else { throw MergeError(index: rank, pair: (a, b), token: a + b) }
            // A repeated pair keeps its last rank, like the HashMap `tokenizers` builds.
            table[Self.key(Int32(ia), Int32(ib))] = Merge(rank: Int32(rank), id: Int32(merged))
        }
        merges = table
        var ids = [Int32](repeating: -1, count: 256)
        var endIDs = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let ch = String(CLIPText.byteToScalar[b])
            ids[b] = vocab[ch].map(Int32.init) ?? -1
            endIDs[b] = vocab[ch + Self.endOfWord].map(Int32.init) ?? -1
        }
        byteIDs = ids
        byteEndIDs = endIDs
        self.unkID = unkID.map(Int32.init)
    }

    /// Merge number `index` (0-based, `#version` line not counted) names a token missing
    /// from the vocabulary.
    struct MergeError: Error { let index: Int; let pair: (String, String); let token: String }

    @inline(__always)
    static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }

    /// Token ids of one pre-tokenized word, appended to `out`. Results are cached per word.
    func encode(word: ArraySlice<Unicode.Scalar>, into out: inout [Int]) {
        var key = String.UnicodeScalarView()
        key.append(contentsOf: word)
        let keyString = String(key)
        if let hit = cache.get(keyString) {
            out.append(contentsOf: hit)
            return
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(word.count * 2)
        for s in word { bytes.append(contentsOf: UTF8.encode(s)!) }
        let ids = merge(bytes: bytes)
        cache.set(keyString, ids)
        out.append(contentsOf: ids)
    }

    /// The merge loop over a linked list of symbols with a min-heap of candidate merges, the
    /// same order `tokenizers`' `Word::merge_all` uses: (rank, position) ascending, entries made
    /// stale by an earlier merge skipped.
    private func merge(bytes: [UInt8]) -> [Int] {
        var sym: [Int32] = []
        sym.reserveCapacity(bytes.count)
        for (i, b) in bytes.enumerated() {
            let id = i == bytes.count - 1 ? byteEndIDs[Int(b)] : byteIDs[Int(b)]
            if id >= 0 {
                sym.append(id)
            } else if let unk = unkID {
                sym.append(unk)
            }
        }
        let n = sym.count
        if n < 2 { return sym.map(Int.init) }
        var next = [Int32](unsafeUninitializedCapacity: n) { buf, c in
            for i in 0..<n { buf[i] = i + 1 < n ? Int32(i + 1) : -1 }
            c = n
        }
        var prev = [Int32](unsafeUninitializedCapacity: n) { buf, c in
            for i in 0..<n { buf[i] = Int32(i - 1) }
            c = n
        }
        var alive = [Bool](repeating: true, count: n)
        var heap = MergeHeap()
        for i in 0..<(n - 1) {
            if let m = merges[Self.key(sym[i], sym[i + 1])] {
                heap.push(.init(rank: m.rank, pos: Int32(i), id: m.id))
            }
        }
        while let top = heap.pop() {
            let p = Int(top.pos)
            guard alive[p], next[p] >= 0 else { continue }
            let q = Int(next[p])
            guard let m = merges[Self.key(sym[p], sym[q])], m.id == top.id else { continue }
            // Merge q into p.
            sym[p] = m.id
            alive[q] = false
            next[p] = next[q]
            if next[q] >= 0 { prev[Int(next[q])] = Int32(p) }
            if prev[p] >= 0, let left = merges[Self.key(sym[Int(prev[p])], sym[p])] {
                heap.push(.init(rank: left.rank, pos: prev[p], id: left.id))
            }
            if next[p] >= 0, let right = merges[Self.key(sym[p], sym[Int(next[p])])] {
                heap.push(.init(rank: right.rank, pos: Int32(p), id: right.id))
            }
        }
        var result: [Int] = []
        var i: Int32 = 0
        while i >= 0 {
            result.append(Int(sym[Int(i)]))
            i = next[Int(i)]
        }
        return result
    }
}

/// Binary min-heap on (rank, pos).
private struct MergeHeap {
    struct Entry { let rank: Int32; let pos: Int32; let id: Int32 }
    private var items: [Entry] = []

    @inline(__always)
    private static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos
    }

    mutating func push(_ e: Entry) {
        items.append(e)
        var c = items.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            guard Self.less(items[c], items[p]) else { break }
            items.swapAt(c, p)
            c = p
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var p = 0
            while true {
                let l = 2 * p + 1, r = l + 1
                var m = p
                if l < items.count, Self.less(items[l], items[m]) { m = l }
                if r < items.count, Self.less(items[r], items[m]) { m = r }
                if m == p { break }
                items.swapAt(p, m)
                p = m
            }
        }
        return first
    }
}

/// Word -> ids cache shared by copies of a tokenizer (prompts repeat the same words). Bounded so
/// a long-running batch cannot grow it without limit.
private final class WordCache: @unchecked Sendable {
    private var table: [String: [Int]] = [:]
    private let lock = NSLock()
    private static let capacity = 50_000

    func get(_ key: String) -> [Int]? {
        lock.lock(); defer { lock.unlock() }
        return table[key]
    }

    func set(_ key: String, _ value: [Int]) {
        lock.lock(); defer { lock.unlock() }
        if table.count >= Self.capacity { table.removeAll(keepingCapacity: true) }
        table[key] = value
    }
}
