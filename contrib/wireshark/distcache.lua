-- distcache.lua: a Wireshark dissector for the distcache SSL/TLS
-- session-cache protocol (protocol version 0x11), as snoopd decodes it.
--
-- Load it for one run:   wireshark -X lua_script:contrib/wireshark/distcache.lua
--                        tshark -X lua_script:contrib/wireshark/distcache.lua -r FILE
-- or for good: copy it into the personal Lua plugins folder
-- (~/.local/lib/wireshark/plugins/ on Linux; Help > About Wireshark >
-- Folders names it).
--
-- It takes TCP traffic on the port set in the preferences (Edit >
-- Preferences > Protocols > DISTCACHE, or -o distcache.port:N; 9001 by
-- default, 0 for none) and, on any port, a stream whose segment starts
-- with a valid 14-byte frame header. A message (one or more frames, the
-- last with complete = 1) is one PDU, reassembled across TCP segments.
--
-- Fields: every header field of every frame (distcache.proto_level,
-- .version, .patch, .is_response, .request_uid, .op_class, .operation,
-- .complete, .data_len), the message (distcache.message.frames,
-- .message.length), the payload (distcache.timeout, .id_len, .session_id,
-- .session_data, .data_length, .status), and the transaction:
-- distcache.result (named as snoopd names results: ok, hit, miss, notok,
-- exists, ..., malformed, unknown-status, orphan, unanswered),
-- distcache.response_in and distcache.response_to (frame numbers) and
-- distcache.time (from the request's first byte to the response's last).
-- A response answers the oldest waiting request of its connection with
-- the same request_uid and operation, as snoopd matches them. "Response
-- in" on a request and "unanswered" need two passes (tshark -2; Wireshark
-- always makes them).
--
-- A broken protocol rule is expert info (group Malformed, severity Error)
-- named distcache.rule.RULE, with distcache.rule holding the rule's name
-- as snoopd reports it: version, is-response, direction, continuation,
-- op-class, operation, complete, data-len, short-frame, message-too-long.
-- The rules are checked in the order snoopd's decoder checks them, byte by
-- byte, so both name the same rule for the same bytes. After one, the rest
-- of that direction is shown as undecoded data: its framing is lost, and
-- the reference implementation drops the connection.

local HEADER = 14
local MAX_FRAME = 2048
local MAX_MESSAGE = 32768
local VERSION = 0x0011
local DEFAULT_PORT = 9001

local OPS = { [0] = "ADD", [1] = "GET", [2] = "REMOVE", [3] = "HAVE" }
local DIRECTIONS = { [0] = "request", [1] = "response" }
local STATUSES = {
	[0] = "ok", [1] = "notok", [2] = "disconnected", [100] = "corrupt", [101] = "exists",
	[102] = "timeout-range", [103] = "id-range", [104] = "data-range",
}
local RULES = {
	"version", "is-response", "direction", "continuation", "op-class",
	"operation", "complete", "data-len", "short-frame", "message-too-long",
}

local proto = Proto("distcache", "distcache session cache protocol")

local f = {
	proto_level = ProtoField.uint32("distcache.proto_level", "Protocol level", base.HEX),
	version = ProtoField.uint16("distcache.version", "Version", base.HEX),
	patch = ProtoField.uint16("distcache.patch", "Patch level", base.HEX),
	is_response = ProtoField.uint8("distcache.is_response", "Is response", base.DEC, DIRECTIONS),
	request_uid = ProtoField.uint32("distcache.request_uid", "Request UID", base.DEC),
	op_class = ProtoField.uint8("distcache.op_class", "Operation class", base.DEC),
	operation = ProtoField.uint8("distcache.operation", "Operation", base.DEC, OPS),
	complete = ProtoField.uint8("distcache.complete", "Complete", base.DEC),
	data_len = ProtoField.uint16("distcache.data_len", "Data length", base.DEC),
	frame_data = ProtoField.bytes("distcache.frame_data", "Frame data"),
	frames = ProtoField.uint32("distcache.message.frames", "Frames in the message", base.DEC),
	length = ProtoField.uint32("distcache.message.length", "Message payload length", base.DEC),
	timeout = ProtoField.uint32("distcache.timeout", "Session timeout (ms)", base.DEC),
	id_len = ProtoField.uint32("distcache.id_len", "Session id length", base.DEC),
	session_id = ProtoField.bytes("distcache.session_id", "Session id"),
	session_data = ProtoField.bytes("distcache.session_data", "Session data"),
	data_length = ProtoField.uint32("distcache.data_length", "Session data length", base.DEC),
	status = ProtoField.uint8("distcache.status", "Status", base.DEC, STATUSES),
	result = ProtoField.string("distcache.result", "Result"),
	response_in = ProtoField.framenum("distcache.response_in", "Response in", base.NONE, frametype.RESPONSE),
	response_to = ProtoField.framenum("distcache.response_to", "Request in", base.NONE, frametype.REQUEST),
	time = ProtoField.relative_time("distcache.time", "Time"),
	rule = ProtoField.string("distcache.rule", "Protocol rule broken"),
	undecoded = ProtoField.bytes("distcache.undecoded", "Undecoded after a protocol error"),
}
proto.fields = f

local experts = {}
for _, r in ipairs(RULES) do
	experts[r] = ProtoExpert.new("distcache.rule." .. r, "distcache rule " .. r, expert.group.MALFORMED, expert.severity.ERROR)
end
local ex_payload = ProtoExpert.new("distcache.malformed_payload", "payload does not fit its operation", expert.group.MALFORMED, expert.severity.WARN)
local ex_orphan = ProtoExpert.new("distcache.orphan", "response to no waiting request", expert.group.SEQUENCE, expert.severity.WARN)
local ex_unanswered = ProtoExpert.new("distcache.unanswered", "request with no response in the capture", expert.group.SEQUENCE, expert.severity.NOTE)
local ex_list = { ex_payload, ex_orphan, ex_unanswered }
for _, r in ipairs(RULES) do ex_list[#ex_list + 1] = experts[r] end
proto.experts = ex_list

proto.prefs.port = Pref.uint("TCP port", DEFAULT_PORT, "TCP port of distcache servers (0: none; other ports are found by the header heuristic)")

-- State built on the first pass, in frame order, and read on every pass:
-- streams[k] holds the client of the TCP connection between the two
-- endpoints k names and each direction's progress;
-- pdus[key] what a message PDU was found to be; undecoded[key] marks
-- data after a protocol error; seen[n] marks the frames the first pass
-- gave this dissector.
local streams, pdus, undecoded, seen

local function reset()
	streams, pdus, undecoded, seen = {}, {}, {}, {}
end
reset()
proto.init = reset

-- pdu_key names one PDU of one frame on every pass, whatever order the
-- frames are dissected in: its frame, its place in the tvb and its first
-- header bytes.
local function pdu_key(pinfo, tvb, offset)
	local n = math.min(HEADER, tvb:len() - offset)
	return pinfo.number .. ":" .. tvb:len() .. ":" .. offset .. ":" .. tostring(tvb:bytes(offset, n))
end

local function endpoint(addr, port)
	return tostring(addr) .. "/" .. port
end

-- stream_of returns pinfo's stream state and whether pinfo travels client
-- to server. The client is the side that is not on the port preference;
-- on other ports, the sender of the stream's first frame if it is a
-- request, else its receiver.
local function stream_of(pinfo, first_is_response)
	local src = endpoint(pinfo.src, pinfo.src_port)
	local dst = endpoint(pinfo.dst, pinfo.dst_port)
	-- Keyed by endpoints, not tcp.stream: fields of other protocols are
	-- not there on a first pass without a tree (tshark -2).
	local id = src < dst and src .. " " .. dst or dst .. " " .. src
	local s = streams[id]
	if not s then
		local port = proto.prefs.port
		local client = src
		if port ~= 0 and pinfo.src_port == port and pinfo.dst_port ~= port then
			client = dst
		elseif not (port ~= 0 and pinfo.dst_port == port) and first_is_response == 1 then
			client = dst
		end
		s = { client = client, dirs = { up = {}, down = {} }, pending = {} }
		streams[id] = s
	end
	return s, src == s.client
end

-- check validates the header bytes b[0..n-1] of a frame in the order
-- snoopd's decoder does, byte by byte. msg is the message this frame
-- continues (nil for a first frame). It returns the rule broken and a
-- line describing it, or nil.
local function check(b, n, up, msg)
	for i = 0, n - 1 do
		local v = b:get_index(i)
		if i == 0 and v ~= 0x00 then
			return "version", string.format("protocol version starts with 0x%02x, want 0x%04x", v, VERSION)
		elseif i == 1 and v ~= 0x11 then
			return "version", string.format("protocol version 0x%04x, want 0x%04x", b:get_index(0) * 256 + v, VERSION)
		elseif i == 4 then
			if v > 1 then
				return "is-response", string.format("is_response is %d, want 0 or 1", v)
			elseif up and v == 1 then
				return "direction", "a response frame travelling client->server"
			elseif not up and v == 0 then
				return "direction", "a request frame travelling server->client"
			elseif msg and v ~= msg.resp then
				return "continuation", string.format("continuation frame has is_response %d, its message started with %d", v, msg.resp)
			end
		elseif i >= 5 and i <= 8 and msg and v ~= msg.uid_bytes:get_index(i - 5) then
			return "continuation", "continuation frame's request_uid differs from its message's first frame"
		elseif i == 9 and v ~= 0 then
			return "op-class", string.format("op_class is %d, want 0", v)
		elseif i == 10 then
			if v > 3 then
				return "operation", string.format("operation is %d, want 0..3", v)
			elseif msg and v ~= msg.op then
				return "continuation", string.format("continuation frame has operation %s, its message is %s", OPS[v], OPS[msg.op])
			end
		elseif i == 11 then
			local so_far = msg and msg.len or 0
			if v > 1 then
				return "complete", string.format("complete is %d, want 0 or 1", v)
			elseif v == 0 and so_far + MAX_FRAME > MAX_MESSAGE then
				return "message-too-long", string.format("message already holds %d bytes; another full frame exceeds %d", so_far, MAX_MESSAGE)
			end
		elseif i == 12 or i == 13 then
			local l = (i == 12) and v * 256 or b:get_index(12) * 256 + v
			local so_far = msg and msg.len or 0
			if l > MAX_FRAME then
				return "data-len", string.format("data_len is %s%d, the limit is %d", i == 12 and "at least " or "", l, MAX_FRAME)
			elseif b:get_index(11) == 0 and l ~= MAX_FRAME then
				return "short-frame", string.format("frame with complete=0 has data_len %d, want %d", l, MAX_FRAME)
			elseif so_far + l > MAX_MESSAGE then
				return "message-too-long", string.format("message would hold %d bytes, the limit is %d", so_far + l, MAX_MESSAGE)
			end
		end
	end
	return nil
end

-- result names a response's outcome as snoopd does (vocab.ResultOf).
local function result_of(op, payload_len, status)
	if payload_len == 0 or (payload_len > 1 and op ~= 1) then
		return "malformed"
	elseif payload_len > 1 then
		return "hit"
	elseif op == 1 and status == 1 then
		return "miss"
	end
	return STATUSES[status] or "unknown-status"
end

-- add_header adds one frame's header fields under parent.
local function add_header(parent, tvb, off, n)
	local t = parent:add(tvb(off, n), "Frame header")
	if n >= 4 then
		t:add(f.proto_level, tvb(off, 4))
		t:add(f.version, tvb(off, 2))
		t:add(f.patch, tvb(off + 2, 2))
	end
	if n >= 5 then t:add(f.is_response, tvb(off + 4, 1)) end
	if n >= 9 then t:add(f.request_uid, tvb(off + 5, 4)) end
	if n >= 10 then t:add(f.op_class, tvb(off + 9, 1)) end
	if n >= 11 then t:add(f.operation, tvb(off + 10, 1)) end
	if n >= 12 then t:add(f.complete, tvb(off + 11, 1)) end
	if n >= 14 then t:add(f.data_len, tvb(off + 12, 2)) end
	return t
end

-- add_payload adds the payload fields of a message of op to tree.
local function add_payload(tree, ptvb, resp, op)
	local n = ptvb:len()
	if not resp then
		if op == 0 then
			if n < 8 then
				tree:add_proto_expert_info(ex_payload, string.format("ADD request of %d bytes, shorter than its timeout and id_len", n))
				return
			end
			tree:add(f.timeout, ptvb(0, 4))
			tree:add(f.id_len, ptvb(4, 4))
			local id_len = ptvb(4, 4):uint()
			if 8 + id_len > n then
				tree:add_proto_expert_info(ex_payload, string.format("id_len %d does not fit a payload of %d bytes", id_len, n))
				return
			end
			tree:add(f.session_id, ptvb(8, id_len))
			tree:add(f.data_length, n - 8 - id_len):set_generated()
			if n > 8 + id_len then tree:add(f.session_data, ptvb(8 + id_len)) end
		else
			tree:add(f.id_len, n):set_generated()
			tree:add(f.session_id, ptvb(0, n))
		end
		return
	end
	if n == 1 then
		tree:add(f.status, ptvb(0, 1))
	elseif n > 1 and op == 1 then
		tree:add(f.data_length, n):set_generated()
		tree:add(f.session_data, ptvb(0, n))
	else
		tree:add_proto_expert_info(ex_payload, string.format("%s response of %d bytes, want 1", OPS[op], n))
	end
end

-- new_pdu records, on the first pass, a message PDU of stream s (its
-- payload plen bytes long, starting with first) and links a response
-- with its request.
local function new_pdu(pinfo, s, resp, uid, op, plen, first, start)
	local rec = { frame = pinfo.number, start = start, ts = pinfo.rel_ts }
	if not resp then
		local q = s.pending
		q[#q + 1] = { uid = uid, op = op, rec = rec }
		return rec
	end
	for i, p in ipairs(s.pending) do
		if p.uid == uid and p.op == op then
			table.remove(s.pending, i)
			local req = p.rec
			req.response_in = rec.frame
			rec.response_to = req.frame
			rec.latency = rec.ts - req.start
			rec.result = result_of(op, plen, first)
			req.result = rec.result
			return rec
		end
	end
	rec.result = "orphan"
	return rec
end

local function nstime(secs)
	if secs < 0 then secs = 0 end
	local ns = math.floor(secs * 1e9 + 0.5)
	return NSTime.new(math.floor(ns / 1e9), ns % 1e9)
end

-- dissect_message shows the message of frames frames starting at offset
-- (length bytes) as rec describes it, and returns its summary for the
-- Info column.
local function dissect_message(tvb, pinfo, tree, offset, length, frames, rec)
	local resp = tvb(offset + 4, 1):uint()
	local uid = tvb(offset + 5, 4):uint()
	local op = tvb(offset + 10, 1):uint()
	local t = tree:add(proto, tvb(offset, length))
	local payload = ByteArray.new()
	local pos = offset
	for i = 1, frames do
		local dl = tvb(pos + 12, 2):uint()
		local h = add_header(t, tvb, pos, HEADER)
		h:set_text(string.format("Frame %d: %s, %d bytes%s", i, DIRECTIONS[resp], dl, tvb(pos + 11, 1):uint() == 1 and ", complete" or ""))
		if dl > 0 then
			h:add(f.frame_data, tvb(pos + HEADER, dl))
			payload:append(tvb:bytes(pos + HEADER, dl))
		end
		pos = pos + HEADER + dl
	end
	local ptvb
	if frames == 1 then
		ptvb = tvb(offset + HEADER, length - HEADER):tvb()
	else
		ptvb = payload:tvb("distcache message")
	end
	t:add(f.frames, frames):set_generated()
	t:add(f.length, ptvb:len()):set_generated()
	add_payload(t, ptvb, resp == 1, op)
	if rec.result then
		t:add(f.result, rec.result):set_generated()
	elseif resp == 0 and pinfo.visited and not rec.response_in then
		t:add(f.result, "unanswered"):set_generated()
		t:add_proto_expert_info(ex_unanswered)
	end
	if rec.response_in then
		t:add(f.response_in, rec.response_in):set_generated()
	end
	if rec.response_to then
		t:add(f.response_to, rec.response_to):set_generated()
		t:add(f.time, nstime(rec.latency)):set_generated()
	end
	if rec.result == "orphan" then
		t:add_proto_expert_info(ex_orphan)
	end
	local what = string.format("%s %s uid=%d", OPS[op], DIRECTIONS[resp], uid)
	if rec.result then what = what .. " " .. rec.result end
	t:append_text(", " .. what)
	return what
end

-- dissect walks the messages of one direction's bytes.
local function dissect(tvb, pinfo, tree)
	local len = tvb:len()
	if len == 0 then return 0 end
	-- A stream the heuristic took in its middle is this dissector's from
	-- then on, and later passes offer it the frames before too: decline
	-- them, as the first pass never saw them as distcache.
	if pinfo.visited then
		if not seen[pinfo.number] then return 0 end
	else
		seen[pinfo.number] = true
	end
	pinfo.cols.protocol = "DISTCACHE"
	local first_resp = len > 4 and tvb(4, 1):uint() or 0
	local s, up = stream_of(pinfo, first_resp)
	local dir = up and s.dirs.up or s.dirs.down
	local offset = 0
	local infos = {}
	while offset < len do
		local key = pdu_key(pinfo, tvb, offset)
		if undecoded[key] or (not pinfo.visited and dir.broken) then
			undecoded[key] = true
			local t = tree:add(proto, tvb(offset))
			t:add(f.undecoded, tvb(offset))
			infos[#infos + 1] = "undecoded after a protocol error"
			break
		end
		-- Walk the frames of one message: stop at its complete frame, at
		-- a broken rule, or where the bytes end.
		local pos, frames, msg = offset, 0, nil
		local rule, detail
		local need = 0
		while true do
			local avail = math.min(HEADER, len - pos)
			rule, detail = check(tvb:bytes(pos, avail), avail, up, msg)
			if rule then break end
			if avail < HEADER then
				need = DESEGMENT_ONE_MORE_SEGMENT
				break
			end
			local dl = tvb(pos + 12, 2):uint()
			if len - pos - HEADER < dl then
				-- The exact count only when this frame ends the message:
				-- TCP does not extend a reassembly it was given an exact
				-- length for.
				need = pos + HEADER + dl - len
				if tvb(pos + 11, 1):uint() == 0 then need = DESEGMENT_ONE_MORE_SEGMENT end
				break
			end
			frames = frames + 1
			if not msg then
				msg = { resp = tvb(pos + 4, 1):uint(), uid_bytes = tvb:bytes(pos + 5, 4), op = tvb(pos + 10, 1):uint(), len = 0 }
			end
			msg.len = msg.len + dl
			pos = pos + HEADER + dl
			if tvb(pos - HEADER - dl + 11, 1):uint() == 1 then break end
			if pos >= len then
				need = DESEGMENT_ONE_MORE_SEGMENT
				break
			end
		end
		if rule then
			-- Show the message's good frames, then the broken header.
			local t = tree:add(proto, tvb(offset, math.min(len - offset, pos - offset + HEADER)))
			local p = offset
			for _ = 1, frames do
				local dl = tvb(p + 12, 2):uint()
				add_header(t, tvb, p, HEADER)
				p = p + HEADER + dl
			end
			add_header(t, tvb, pos, math.min(HEADER, len - pos))
			t:add(f.rule, rule):set_generated()
			t:add_proto_expert_info(experts[rule], rule .. ": " .. detail)
			infos[#infos + 1] = "protocol error: " .. rule
			if not pinfo.visited then dir.broken = true end
			if pos + HEADER < len then
				t:add(f.undecoded, tvb(pos + math.min(HEADER, len - pos)))
			end
			break
		end
		if need ~= 0 then
			if pinfo.can_desegment > 0 then
				if not pinfo.visited and not dir.partial_start then dir.partial_start = pinfo.rel_ts end
				pinfo.desegment_offset = offset
				pinfo.desegment_len = need
				break
			end
			tree:add(proto, tvb(offset)):append_text(" (a message cut short)")
			break
		end
		local rec = pdus[key]
		if not rec then
			local start = dir.partial_start or pinfo.rel_ts
			dir.partial_start = nil
			local resp = tvb(offset + 4, 1):uint() == 1
			local plen = pos - offset - frames * HEADER
			local first = plen > 0 and tvb(offset + HEADER, 1):uint() or 0
			rec = new_pdu(pinfo, s, resp, tvb(offset + 5, 4):uint(), tvb(offset + 10, 1):uint(), plen, first, start)
			pdus[key] = rec
		end
		infos[#infos + 1] = dissect_message(tvb, pinfo, tree, offset, pos - offset, frames, rec)
		offset = pos
	end
	if #infos > 0 then
		pinfo.cols.info = table.concat(infos, "; ")
	end
	return len
end

proto.dissector = dissect

-- heuristic takes a stream whose segment starts with a valid header.
local function heuristic(tvb, pinfo, tree)
	if tvb:len() < HEADER then return false end
	local b = tvb:bytes(0, HEADER)
	local resp = b:get_index(4)
	if resp > 1 then return false end
	-- Any direction will do here: the header must hold on its own.
	if check(b, HEADER, resp == 0, nil) then return false end
	pinfo.conversation = proto
	dissect(tvb, pinfo, tree)
	return true
end
proto:register_heuristic("tcp", heuristic)

local registered_port = 0
local function register_port()
	local t = DissectorTable.get("tcp.port")
	if registered_port ~= 0 then t:remove(registered_port, proto) end
	registered_port = proto.prefs.port
	if registered_port ~= 0 then t:add(registered_port, proto) end
end
proto.prefs_changed = register_port
register_port()
