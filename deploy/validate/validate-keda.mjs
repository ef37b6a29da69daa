// Reads a JSON array of KEDA resources on stdin and validates each against the schema generated
// from KEDA's CRDs (@kubernetes-models/keda). Prints one JSON line per resource:
// {"kind", "name", "errors": [..]}; exits 1 if any resource is invalid or of an unknown kind.
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ScaledJob } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledJob";

const MODELS = { ScaledObject, TriggerAuthentication, ScaledJob };
const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const resource of resources) {
  const Model = resource.apiVersion === "keda.sh/v1alpha1" ? MODELS[resource.kind] : undefined;
  const result = { kind: resource.kind, name: resource.metadata?.name ?? "", errors: [] };
  if (!Model) {
    result.errors.push(`no KEDA schema for ${resource.apiVersion} ${resource.kind}`);
  } else {
    try {
      new Model(resource).validate();
    } catch (error) {
      result.errors.push(String(error.message ?? error));
    }
  }
  failed ||= result.errors.length > 0;
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
