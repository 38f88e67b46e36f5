// Evaluates features with GrowthBook's JavaScript SDK, as an app would: the SDK's payload is
// fetched from xpstream, then every user's attributes are set and every feature evaluated.
const fs = require("fs");
const { GrowthBook } = require("@growthbook/growthbook");

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const response = await fetch(request.url);
  const payload = await response.json();
  const results = [];
  for (const attributes of request.users) {
    const gb = new GrowthBook({
      features: payload.features,
      savedGroups: payload.savedGroups,
      attributes,
    });
    const values = {};
    for (const key of request.features) {
      const result = gb.evalFeature(key);
      const variant = result.experimentResult && result.experimentResult.inExperiment
        ? result.experimentResult.key : null;
      values[key] = { value: result.value, variant };
    }
    results.push(values);
    gb.destroy();
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => { console.error(error); process.exit(1); });
