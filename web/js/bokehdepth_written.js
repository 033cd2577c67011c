// Show on BokehDepth save nodes what they wrote: ComfyUI's page draws an output node's "images"
// itself but not its "text", so a read-only text box under the widgets takes it.
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

app.registerExtension({
  name: "BokehDepth.WrittenFiles",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("BokehDepth") || !nodeData.output_node) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text ?? []).join("\n");
      if (!text) return;
      let box = this.widgets?.find((w) => w.name === "written");
      if (!box) {
        box = ComfyWidgets.STRING(this, "written", ["STRING", { multiline: true }], app).widget;
        box.inputEl.readOnly = true;
        box.inputEl.style.opacity = 0.75;
        box.serialize = false;
      }
      box.value = text;
      this.setDirtyCanvas?.(true, true);
    };
  },
});
