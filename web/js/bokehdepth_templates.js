// ComfyUI lists a custom node pack's templates (workflows/*.json) in the order the file system
// returns them; ours are numbered lessons, so the template browser gets them sorted by name.
import { api } from "../../../scripts/api.js";

const parts = new URL(import.meta.url).pathname.split("/");
const pack = decodeURIComponent(parts[parts.indexOf("extensions") + 1] ?? "");
const listTemplates = api.getWorkflowTemplates.bind(api);

api.getWorkflowTemplates = async function () {
  const all = await listTemplates();
  if (Array.isArray(all?.[pack])) {
    all[pack] = [...all[pack]].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  }
  return all;
};
