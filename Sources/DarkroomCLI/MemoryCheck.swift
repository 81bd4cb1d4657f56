import ArgumentParser
import Darkroom
import Foundation

/// The check before loading weights: refuse a render whose estimated peak memory exceeds what
/// this process may use, with one line naming the estimate, the limit and the largest size
/// that fits (exit code 1), instead of being killed by the kernel half-way.
struct MemoryCheck {
    let profile: ModelMemoryProfile

    /// The model's profile from its configs and weight headers; nil when they cannot be read,
    /// in which case loading the model reports the problem itself.
    init?(_ options: RunOptions) {
        guard let p = try? ModelMemoryProfile(model: ModelLocator.resolve(options.model),
                                              checkpointOptions: options.checkpointOptions ?? CheckpointOptions())
        else { return nil }
        profile = p
    }

    /// Throws ExitCode(1) after printing the refusal when the estimate exceeds the limit.
    /// `singleBatch`: the run is one batch, so the UNet is freed before the VAE decode.
    func check(width: Int, height: Int, batch: Int, guidance: Bool, imageToImage: Bool, singleBatch: Bool, ignore: Bool) throws {
        let limit: SystemMemory?
        do { limit = try SystemMemory.current() } catch let e as DarkroomError {
            printError(e.description)
            throw ExitCode(Exit.usage)
        }
        guard let limit else { return }
        let e = profile.estimate(width: width, height: height, batch: batch, guidance: guidance, imageToImage: imageToImage, releasingWeights: singleBatch)
        guard e.total > limit.bytes else { return }
        let f = SystemMemory.format
        let what = "\(width)x\(height)\(batch > 1 ? " with --batch-size \(batch)" : "")"
        if ignore {
            printWarning("\(what) needs about \(f(e.total)) but \(f(limit.bytes)) is available (\(limit.source)); going on because of --ignore-memory-check")
            return
        }
        var line = "not enough memory: \(what) needs about \(f(e.total)) (weights \(f(e.weights)), \(e.peakPhase) \(f(e.activations))) but \(f(limit.bytes)) is available (\(limit.source)); "
        if let fit = profile.largestFitting(width: width, height: height, batch: batch, guidance: guidance, imageToImage: imageToImage,
                                            releasingWeights: singleBatch, limit: limit.bytes) {
            line += "the largest size that fits is \(fit.width)x\(fit.height)"
            if batch > 1, profile.estimate(width: width, height: height, batch: 1, guidance: guidance, imageToImage: imageToImage).total <= limit.bytes {
                line += " (or --batch-size 1 at \(width)x\(height))"
            }
        } else {
            line += "no size fits (the weights alone take \(f(e.weights + e.base)))"
        }
        printError(line + "; --ignore-memory-check runs anyway")
        throw ExitCode(Exit.failure)
    }
}
