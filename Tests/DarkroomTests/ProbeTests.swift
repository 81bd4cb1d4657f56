import Foundation
import XCTest
@testable import Darkroom

/// Submodules on inputs of tiny variance (Tools/fixtures_probes.py), where a wrong norm epsilon or
/// a swapped weight/bias moves the output by percents: the whole-model tests alone would not see
/// an epsilon of 1e-5 where diffusers uses 1e-6.
final class ProbeTests: XCTestCase {
    func testSubmodulesOnLowVarianceInputs() throws {
        for name in ["tiny-sd1", "tiny-sd2"] {
            let folder = TestPaths.model(name)
            let g = try Golden("probes", "\(name).safetensors")
            // Tolerance: 1e-4 relative to each output's magnitude; eps mistakes give >1e-2.
            func check(_ key: String, _ actual: Tensor) throws {
                assertClose(actual, try g.tensor("\(key).out"), atol: 0, rtol: 1e-4, "\(name) \(key)")
            }

            let uc = try UNetConfig.load(folder.appendingPathComponent("unet/config.json"))
            let uw = try Weights.load(componentFolder: folder.appendingPathComponent("unet"), stem: "diffusion_pytorch_model")
            let root = uw.scope("")
            let resnet = try ResnetBlock2D(root["down_blocks.1.resnets.0"], in: uc.blockOutChannels[0], out: uc.blockOutChannels[1],
                                           tembChannels: uc.timeEmbeddingDim, groups: uc.normNumGroups, eps: uc.normEps)
            try check("unet.resnet", resnet(try g.tensor("unet.resnet.x"), siluTemb: try g.tensor("unet.resnet.temb").activated(.silu)))

            let transformer = try Transformer2DModel(
                root["down_blocks.0.attentions.0"], channels: uc.blockOutChannels[0], heads: uc.numAttentionHeads[0],
                layers: uc.transformerLayersPerBlock[0], crossAttentionDim: uc.crossAttentionDim[0], groups: uc.normNumGroups,
                linearProjection: uc.useLinearProjection, onlyCrossAttention: false)
            let context = try g.tensor("unet.transformer.context")
            try check("unet.transformer", transformer(try g.tensor("unet.transformer.x"), context: context))
            try check("unet.block", transformer.blocks[0](try g.tensor("unet.block.x"), context: context))

            let normOut = try GroupNorm(root["conv_norm_out"], groups: uc.normNumGroups, channels: uc.blockOutChannels[0], eps: uc.normEps)
            try check("unet.conv_norm_out", normOut(try g.tensor("unet.conv_norm_out.x")))

            let vc = try VAEConfig.load(folder.appendingPathComponent("vae/config.json"))
            let vw = try Weights.load(componentFolder: folder.appendingPathComponent("vae"), stem: "diffusion_pytorch_model")
            let attention = try VAEAttention(vw.scope("decoder.mid_block.attentions.0"), channels: vc.blockOutChannels.last!, groups: vc.normNumGroups)
            try check("vae.attention", attention(try g.tensor("vae.attention.x")))
            let vx = try g.tensor("vae.resnet.x")
            let rc = Array(vc.blockOutChannels.reversed())
            let vres = try ResnetBlock2D(vw.scope("decoder.up_blocks.1.resnets.0"), in: vx.shape[1], out: rc[1], tembChannels: nil,
                                         groups: vc.normNumGroups, eps: 1e-6)
            try check("vae.resnet", vres(vx))

            let tc = try CLIPTextConfig(ConfigFile.load(folder.appendingPathComponent("text_encoder/config.json")))
            let tw = try Weights.load(componentFolder: folder.appendingPathComponent("text_encoder"), stem: "model")
            let prefix = tw.has("text_model.final_layer_norm.weight") ? "text_model.final_layer_norm" : "final_layer_norm"
            let fln = try LayerNorm(tw.scope(prefix), dim: tc.hiddenSize, eps: tc.layerNormEps)
            try check("text.final_layer_norm", fln(try g.tensor("text.final_layer_norm.x")))
        }
    }
}
