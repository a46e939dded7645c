// Server-Sent Events, as text arrives in pieces: `push` takes the next
// piece and returns the events it completed, each { event, data } with the
// data parsed as JSON where it is JSON. Lines end in LF, CRLF or CR.

export function sseReader() {
  let buffer = "";
  let event = "message";
  let data = [];
  return {
    push(text) {
      buffer += text;
      const out = [];
      // A trailing CR may be the first half of a CRLF: wait for the next piece.
      let end;
      while ((end = buffer.search(/\r\n|\r(?!$)|\n/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) {
            const text = data.join("\n");
            let parsed;
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
            out.push({ event, data: parsed });
          }
          event = "message";
          data = [];
        } else if (line.startsWith(":")) {
          // a comment: the keep-alive
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
      }
      return out;
    },
  };
}
