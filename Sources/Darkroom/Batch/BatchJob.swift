import Foundation

/// One image of a batch.
public struct BatchJob: Sendable, Equatable {
    /// Where a job came from: a line of a prompts file.
    public struct Source: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        /// 1-based line number.
        public var line: Int
        public init(path: String, line: Int) {
            self.path = path
            self.line = line
        }
        public var description: String { "\(path):\(line)" }
    }

    /// The job's position in the whole batch: lines in file order, each line's `count` images in
    /// a row (a line that cannot be read still reserves its images' positions, see
    /// `PromptFile.jobs(defaults:)`). File names and shards depend only on it, so reruns and
    /// every machine of a sharded run agree on them.
    public var index: Int
    /// What to render, with width and height resolved.
    public var request: GenerationRequest
    public var source: Source?
    /// The image's number within its line (0 ..< count); its seed is the line's seed plus this.
    public var imageInLine: Int
    /// Image-to-image: the PNG to start from and the strength; nil for text-to-image.
    public var initImage: InitImage?

    /// The start of an image-to-image job.
    public struct InitImage: Sendable, Equatable {
        public var url: URL
        /// In (0, 1]: how much of the image is repainted.
        public var strength: Float
        public init(url: URL, strength: Float) {
            self.url = url
            self.strength = strength
        }
    }

    public init(index: Int, request: GenerationRequest, source: Source? = nil, imageInLine: Int = 0, initImage: InitImage? = nil) {
        self.index = index
        self.request = request
        self.source = source
        self.imageInLine = imageInLine
        self.initImage = initImage
    }

    /// Jobs for `count` images of one request, seeds `request.seed`, `+ 1`, ... (A1111's batch
    /// convention), indices from `firstIndex`.
    public static func series(_ request: GenerationRequest, count: Int, firstIndex: Int = 0, source: Source? = nil,
                              initImage: InitImage? = nil) -> [BatchJob] {
        (0..<count).map { k in
            var r = request
            r.seed = request.seed &+ UInt64(k)
            return BatchJob(index: firstIndex + k, request: r, source: source, imageInLine: k, initImage: initImage)
        }
    }
}

/// Machine K of N in a run split over several machines: it takes the jobs whose index modulo N
/// is K − 1. Every machine reads the same prompts file and so computes the same job list; the
/// shards are disjoint and together cover every job, with no coordinator.
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    /// 1-based.
    public let index: Int
    public let count: Int

    /// The whole batch.
    public static let all = Shard(uncheckedIndex: 1, count: 1)

    private init(uncheckedIndex: Int, count: Int) {
        index = uncheckedIndex
        self.count = count
    }

    public init(_ index: Int, of count: Int) throws {
        guard count >= 1, count <= 1_000_000, index >= 1, index <= count else {
            throw DarkroomError.invalidArgument("shard \(index)/\(count): need 1 <= K <= N (K is 1-based)")
        }
        self.index = index
        self.count = count
    }

    /// "K/N", e.g. "3/8".
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0].trimmingCharacters(in: .whitespaces)),
              let n = Int(parts[1].trimmingCharacters(in: .whitespaces))
        else { throw DarkroomError.invalidArgument("shard '\(text)' is not K/N (e.g. 1/4; K is 1-based)") }
        try self.init(k, of: n)
    }

    public func contains(jobIndex: Int) -> Bool { jobIndex % count == index - 1 }

    public var description: String { "\(index)/\(count)" }

    /// The manifest this shard appends to. One writer per file: appends from several machines
    /// to one file on network storage (NFS) can interleave or overwrite each other.
    public var manifestName: String { count == 1 ? "manifest.jsonl" : "manifest-\(index)-of-\(count).jsonl" }
}
