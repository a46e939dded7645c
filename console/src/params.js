// Parameters typed by a person: a JSON object or a reason it is not one.

/** Parameters as a JSON object, or why they are not one. */
export function parseParameters(text) {
  if (!text.trim()) return { value: {} };
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { error: 'Parameters must be a JSON object, such as {"name": "Ada"}.' };
    }
    return { value };
  } catch (e) {
    return { error: `Not JSON: ${e.message}` };
  }
}
