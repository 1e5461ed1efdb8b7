// greet (node runtime): says hello.
//
// GET /greet?name=Ada -> {"greeting": "hello Ada"}; POST /greet with {"name": "Ada"} -> the same.
// No name, or a body that is not a JSON object with a string name, is a 400 with a JSON message;
// methods other than GET and POST get a 405.
"use strict";

const reply = (statusCode, body, headers = {}) => ({ statusCode, body, headers });

module.exports = async (event, context) => {
  let name;
  if (event.method === "GET") {
    name = event.query.name;
  } else if (event.method === "POST") {
    let doc;
    try {
      doc = JSON.parse(event.body.toString("utf8"));
    } catch {
      return reply(400, { error: "the body is not JSON" });
    }
    name = doc !== null && typeof doc === "object" ? doc.name : undefined;
  } else {
    return reply(405, { error: `method ${event.method} is not allowed; use GET or POST` }, { Allow: "GET, POST" });
  }
  if (typeof name !== "string" || name.trim() === "") {
    return reply(400, { error: "give a name: ?name=... or {\"name\": ...}" });
  }
  return { greeting: `hello ${name.trim()}` };
};
