//! Structured output and tool calls through the whole system (edge, QUIC, core, the real
//! model) with the official `openai` package: `parse` into Pydantic models, a tool round trip,
//! streamed tool-call deltas against the whole answer, and typed errors for bad schemas.

use chorus_tests::*;
use serde_json::{Value, json};

const CLIENT: &str = r#"
import json, sys
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import List, Literal
from openai import OpenAI
from pydantic import BaseModel, Field

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0, timeout=600)
parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse

class Address(BaseModel):
    city: str = Field(max_length=30)
    country: str = Field(max_length=30)

class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=150)
    address: Address

class Colour(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"

class Review(BaseModel):
    product: str = Field(max_length=40)
    sentiment: Literal["positive", "negative", "neutral"]
    colour: Colour
    stars: int = Field(ge=1, le=5)

class Step(BaseModel):
    text: str = Field(max_length=60)

class Recipe(BaseModel):
    title: str = Field(max_length=50)
    ingredients: List[str] = Field(min_length=2, max_length=4)
    steps: List[Step] = Field(min_length=1, max_length=3)

places = ["Paris", "Lima", "Oslo", "Cairo", "Tokyo", "Quito", "Hanoi", "Accra", "Perth", "Riga",
          "Seoul", "Dakar", "Bern", "Havana", "Delhi", "Sofia", "Nairobi", "Lisbon", "Kyiv", "Austin"]
things = ["kettle", "bicycle", "phone", "lamp", "chair", "backpack", "guitar", "toaster", "camera", "sofa",
          "watch", "tent", "drill", "scarf", "printer", "mug", "desk", "speaker", "helmet", "blender"]
dishes = ["pancakes", "soup", "salad", "curry", "pasta", "omelette", "rice", "bread", "stew", "tacos",
          "cookies", "noodles", "pizza", "porridge", "chili", "risotto", "dumplings", "pie", "smoothie", "toast"]
jobs = ([(Person, f"Create a fictional character from {p} for a novel.") for p in places]
        + [(Review, f"Write a short review of a {t}.") for t in things]
        + [(Recipe, f"Give me a simple recipe for {d}.") for d in dishes])

def one(i_job):
    i, (model, prompt) = i_job
    r = parse(model="chorus", messages=[{"role": "user", "content": prompt}], response_format=model,
              max_tokens=300, seed=i)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, model), type(parsed)
    model.model_validate_json(r.choices[0].message.content)
    return model.__name__

with ThreadPoolExecutor(8) as pool:
    kinds = list(pool.map(one, enumerate(jobs)))

tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"], "additionalProperties": False}}}]
msgs = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
first = client.chat.completions.create(model="chorus", messages=msgs, tools=tools, tool_choice="required",
                                       temperature=0, max_tokens=120)
choice = first.choices[0]
calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls]

streamed = {}
for chunk in client.chat.completions.create(model="chorus", messages=msgs, tools=tools, tool_choice="required",
                                            temperature=0, max_tokens=120, stream=True):
    for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        c = streamed.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
        c["id"] = d.id or c["id"]
        if d.function and d.function.name:
            c["name"] = d.function.name
        if d.function and d.function.arguments:
            c["arguments"] += d.function.arguments
    if chunk.choices and chunk.choices[0].finish_reason:
        stream_finish = chunk.choices[0].finish_reason

named = client.chat.completions.create(model="chorus", messages=msgs, tools=tools, temperature=0.7, seed=3,
    tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=120)

history = msgs + [choice.message.model_dump(exclude_none=True)] + [
    {"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"temperature": 18, "unit": "celsius", "sky": "sunny"})}
    for c in calls]
answer = client.chat.completions.create(model="chorus", messages=history, tools=tools, tool_choice="none",
                                        temperature=0, max_tokens=60)

plain = client.completions.create(model="chorus", prompt="The capital of France is", max_tokens=12,
                                  temperature=0, echo=True, logprobs=2)
pieces = "".join(c.choices[0].text for c in client.completions.create(
    model="chorus", prompt="The capital of France is", max_tokens=12, temperature=0, stream=True) if c.choices)
ids = client.completions.create(model="chorus", prompt=[504, 3575, 282, 4649, 314], max_tokens=4, temperature=0)
try:
    client.completions.create(model="chorus", prompt="x", suffix="y", max_tokens=4)
    suffix_err = None
except Exception as e:
    suffix_err = e.body.get("param") if isinstance(e.body, dict) else str(e)

resp = client.responses.create(model="chorus", input="Name a colour.", instructions="Answer briefly.",
                               max_output_tokens=16, temperature=0)
resp_events, resp_deltas, resp_final = [], "", None
for e in client.responses.create(model="chorus", input=[{"role": "user", "content": "Name a colour."}],
                                 instructions="Answer briefly.", max_output_tokens=16, temperature=0, stream=True):
    resp_events.append(e.type)
    if e.type == "response.output_text.delta":
        resp_deltas += e.delta
    if e.type in ("response.completed", "response.incomplete"):
        resp_final = e.response.output_text

print(json.dumps({
    "resp_text": resp.output_text, "resp_usage": resp.usage.model_dump(), "resp_events": resp_events,
    "resp_deltas": resp_deltas, "resp_final": resp_final,
    "completion": plain.choices[0].text, "completion_lp": plain.choices[0].logprobs.model_dump(),
    "completion_usage": plain.usage.model_dump(), "completion_stream": pieces,
    "ids_text": ids.choices[0].text, "ids_usage": ids.usage.model_dump(), "suffix_err": suffix_err,
    "kinds": kinds,
    "finish": choice.finish_reason, "content": choice.message.content, "calls": calls,
    "streamed": [streamed[k] for k in sorted(streamed)], "stream_finish": stream_finish,
    "named": [(c.function.name, c.function.arguments) for c in named.choices[0].message.tool_calls],
    "answer": answer.choices[0].message.content, "answer_calls": answer.choices[0].message.tool_calls,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_parses_structured_output_and_round_trips_tool_calls() {
    let sys = System::up("structured").await;
    let dir = scratch("structured");
    let script = write_file(&dir, "structured.py", CLIENT);
    let r = run_openai_script(&sys, &script).await;
    let kinds = r["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 60, "{r}");
    for k in ["Person", "Review", "Recipe"] {
        assert_eq!(kinds.iter().filter(|x| *x == k).count(), 20, "{r}");
    }
    // The forced call parses against its schema.
    assert_eq!(r["finish"], "tool_calls", "{r}");
    let calls = r["calls"].as_array().unwrap();
    assert!(!calls.is_empty(), "{r}");
    for c in calls {
        let args: Value = serde_json::from_str(c["arguments"].as_str().unwrap()).unwrap();
        match c["name"].as_str().unwrap() {
            "get_weather" => {
                assert!(args["city"].is_string() && ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()))
            }
            "get_time" => assert!(args["city"].is_string()),
            other => panic!("called {other}"),
        }
        assert!(c["id"].as_str().unwrap().starts_with("call_"), "{c}");
    }
    // Streamed deltas reassemble to the whole answer's calls (ids are per request).
    let without_ids = |v: &Value| -> Vec<(Value, Value)> {
        v.as_array().unwrap().iter().map(|c| (c["name"].clone(), c["arguments"].clone())).collect()
    };
    assert_eq!(without_ids(&r["streamed"]), without_ids(&r["calls"]), "{r}");
    let ids: std::collections::HashSet<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), calls.len(), "call ids are distinct: {r}");
    assert_eq!(r["stream_finish"], "tool_calls");
    // A named function is the one called.
    let named = r["named"].as_array().unwrap();
    assert!(named.iter().all(|c| c[0] == "get_time"), "{r}");
    let args: Value = serde_json::from_str(named[0][1].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{r}");
    // /v1/completions: echo puts the prompt first; streamed text equals the whole answer;
    // logprobs in the legacy shape; token-id prompts; suffix refused by name.
    let c = r["completion"].as_str().unwrap();
    let rest = c.strip_prefix("The capital of France is").unwrap_or_else(|| panic!("echo: {c:?}"));
    assert_eq!(rest, r["completion_stream"].as_str().unwrap(), "{r}");
    assert!(!rest.is_empty(), "{r}");
    let lp = &r["completion_lp"];
    let n = r["completion_usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert_eq!(lp["tokens"].as_array().unwrap().len(), n, "{r}");
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2, "{r}");
    assert_eq!(r["ids_usage"]["prompt_tokens"], 5, "{r}");
    assert!(!r["ids_text"].as_str().unwrap().is_empty(), "{r}");
    assert_eq!(r["suffix_err"], "suffix", "{r}");
    // The Responses API: text whole and streamed agree, the stream's events in order.
    let text = r["resp_text"].as_str().unwrap();
    assert!(!text.is_empty(), "{r}");
    assert_eq!(r["resp_deltas"], text, "{r}");
    assert_eq!(r["resp_final"], text, "{r}");
    let events = r["resp_events"].as_array().unwrap();
    assert_eq!(events[0], "response.created", "{r}");
    assert!(["response.completed", "response.incomplete"].contains(&events.last().unwrap().as_str().unwrap()), "{r}");
    assert!(r["resp_usage"]["output_tokens"].as_u64().unwrap() >= 1, "{r}");
    // With the tool's result in the history, the model answers in text.
    assert!(!r["answer"].as_str().unwrap_or("").trim().is_empty(), "{r}");
    assert_eq!(r["answer_calls"], Value::Null, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schemas_and_grammars_are_400s_naming_the_field() {
    let sys = System::up("badschema").await;
    let post = |body: Value| {
        let addr = sys.edge.addr;
        async move {
            let r =
                http(addr, "POST", "/v1/chat/completions", &[("authorization", &auth(KEY))], &body.to_string()).await;
            (r.status, r.json())
        }
    };
    let base = |extra: Value| {
        let mut b = json!({"model": "chorus", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}}),
            "response_format.json_schema.schema",
        ),
        (json!({"response_format": {"type": "regex", "regex": "(unclosed"}}), "response_format.regex"),
        (json!({"response_format": {"type": "grammar", "grammar": "start: nothing_here"}}), "response_format.grammar"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "description": "d".repeat(70_000)}}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}], "tool_choice": "required"}),
            "tools",
        ),
        (json!({"logit_bias": {"99999999": 5}}), "logit_bias"),
    ];
    for (extra, param) in cases {
        let (status, body) = post(base(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], param, "{extra}: {body}");
    }
    // The system still serves afterwards, and json_object answers are objects.
    let (status, body) = post(base(json!({"response_format": {"type": "json_object"}, "max_tokens": 200}))).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(v.is_object());
}

/// Prompt tokens the core's engines computed so far.
fn prefilled(sys: &System) -> u64 {
    sys.core.core.fleets.iter().map(|f| f.handle.metrics().sched.prefill_tokens.iter().sum::<u64>()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_answers_share_one_prefill_and_stream_by_index() {
    let sys = System::up("n-answers").await;
    let long = "Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape. ".repeat(12);
    let body = |n: u32, stream: bool| {
        json!({"model": "chorus", "n": n, "temperature": 1.0, "seed": 5, "max_tokens": 12, "stream": stream,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": format!("{long}Name one of them.")}]})
        .to_string()
    };
    let key = [("authorization", auth(KEY))];
    let headers: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let before = prefilled(&sys);
    let r = http(sys.edge.addr, "POST", "/v1/chat/completions", &headers, &body(3, false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let after = prefilled(&sys);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    let mut completion = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
        assert!(c["message"]["content"].is_string(), "{v}");
        assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()), "{v}");
    }
    for c in choices {
        completion += c["message"]["content"].as_str().map_or(0, |_| 1);
    }
    assert_eq!(completion, 3);
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 150, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 3, "{v}");
    // One prefill: the later answers reuse the first's full prompt blocks and compute only the
    // last, partial one (and one token each), not the whole prompt again.
    let computed = after - before;
    eprintln!("n = 3: {computed} prompt tokens computed for a {prompt}-token prompt");
    assert!(computed < prompt + 2 * 32, "computed {computed} prompt tokens for a {prompt}-token prompt and n = 3");
    let texts: Vec<&str> = choices.iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| *t != texts[0]) || texts[0].is_empty(), "each answer has its own seed: {texts:?}");

    // Streamed: chunks for both indices, each with its own finish.
    let r = http(sys.edge.addr, "POST", "/v1/chat/completions", &headers, &body(2, true)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = sse_events(&r.body);
    let mut finishes = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (_, data) in &events {
        let Ok(c) = serde_json::from_str::<Value>(data) else { continue };
        for ch in c["choices"].as_array().into_iter().flatten() {
            let i = ch["index"].as_u64().unwrap();
            seen.insert(i);
            if let Some(f) = ch["finish_reason"].as_str() {
                finishes.insert(i, f.to_string());
            }
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1], "{}", r.body);
    assert_eq!(finishes.len(), 2, "{}", r.body);
    // n > 1 cannot be stored.
    let stored = json!({"model": "chorus", "n": 2, "store": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = http(sys.edge.addr, "POST", "/v1/chat/completions", &headers, &stored.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "n");
}
