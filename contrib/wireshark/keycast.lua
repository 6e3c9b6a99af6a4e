-- Wireshark dissector for keycast's in-band key change notice: the payload
-- of an ESP packet with next header 253, once Wireshark has deciphered it
-- (Preferences > Protocols > ESP: attempt to detect/decode encrypted payloads,
-- and the keys from `keycast-ctl wireshark-keys CHANNEL` in the ESP SAs).
--
-- Body: version (1) | type (1) | length of the TLVs (2, big-endian) | TLVs,
-- each TLV type (1) | length (1) | value. Unknown TLV types are shown and
-- skipped, as keycast itself skips them.
--
-- Use: tshark -X lua_script:keycast.lua ..., or copy the file into
-- ~/.local/lib/wireshark/plugins/.

local keycast = Proto("keycast", "keycast key change notice")

local msg_types = { [1] = "key change notice" }
local tlv_types = { [1] = "next SPI", [2] = "ms to switch", [3] = "channel" }

local f = keycast.fields
f.version = ProtoField.uint8("keycast.version", "Version", base.DEC)
f.type = ProtoField.uint8("keycast.type", "Type", base.DEC, msg_types)
f.length = ProtoField.uint16("keycast.length", "TLV length", base.DEC)
f.tlv = ProtoField.none("keycast.tlv", "TLV")
f.tlv_type = ProtoField.uint8("keycast.tlv.type", "TLV type", base.DEC, tlv_types)
f.tlv_len = ProtoField.uint8("keycast.tlv.length", "TLV length", base.DEC)
f.tlv_value = ProtoField.bytes("keycast.tlv.value", "Value")
f.next_spi = ProtoField.uint32("keycast.next_spi", "Next SPI", base.DEC_HEX)
f.ms_to_switch = ProtoField.uint32("keycast.ms_to_switch", "Milliseconds to switch", base.DEC)
f.channel = ProtoField.uint32("keycast.channel", "Channel", base.DEC)

local e_truncated = ProtoExpert.new("keycast.truncated", "Truncated notice", expert.group.MALFORMED,
  expert.severity.ERROR)
local e_version = ProtoExpert.new("keycast.bad_version", "Unknown notice version", expert.group.MALFORMED,
  expert.severity.WARN)
local e_length = ProtoExpert.new("keycast.bad_length", "Known TLV with the wrong length",
  expert.group.MALFORMED, expert.severity.ERROR)
local e_missing = ProtoExpert.new("keycast.missing", "Mandatory TLV missing (the receiver rejects it)",
  expert.group.MALFORMED, expert.severity.ERROR)
keycast.experts = { e_truncated, e_version, e_length, e_missing }

-- Known TLVs: each is a u32.
local u32_fields = { [1] = f.next_spi, [2] = f.ms_to_switch, [3] = f.channel }

function keycast.dissector(buf, pinfo, tree)
  pinfo.cols.protocol = "keycast"
  local t = tree:add(keycast, buf())
  if buf:len() < 4 then
    t:add_proto_expert_info(e_truncated)
    return
  end
  local version = buf(0, 1):uint()
  t:add(f.version, buf(0, 1))
  t:add(f.type, buf(1, 1))
  t:add(f.length, buf(2, 2))
  if version ~= 1 then t:add_proto_expert_info(e_version) end
  local tlv_end = 4 + buf(2, 2):uint()
  if tlv_end > buf:len() then
    t:add_proto_expert_info(e_truncated)
    tlv_end = buf:len()
  end
  local seen, info = {}, {}
  local off = 4
  while off + 2 <= tlv_end do
    local ty, len = buf(off, 1):uint(), buf(off + 1, 1):uint()
    if off + 2 + len > tlv_end then
      t:add_proto_expert_info(e_truncated)
      break
    end
    local item = t:add(f.tlv, buf(off, 2 + len))
    item:set_text(string.format("TLV: %s", tlv_types[ty] or ("type " .. ty)))
    item:add(f.tlv_type, buf(off, 1))
    item:add(f.tlv_len, buf(off + 1, 1))
    local field = u32_fields[ty]
    if field and len == 4 then
      item:add(field, buf(off + 2, 4))
      seen[ty] = buf(off + 2, 4):uint()
    elseif field then
      item:add_proto_expert_info(e_length)
    elseif len > 0 then
      item:add(f.tlv_value, buf(off + 2, len))
    end
    off = off + 2 + len
  end
  -- The channel TLV is optional (a one-channel sender may leave it out).
  if seen[1] == nil or seen[2] == nil then t:add_proto_expert_info(e_missing) end
  if seen[1] then table.insert(info, "next SPI " .. seen[1]) end
  if seen[2] then table.insert(info, "in " .. seen[2] .. " ms") end
  if seen[3] then table.insert(info, "channel " .. seen[3]) end
  pinfo.cols.info = "Key change notice: " .. table.concat(info, ", ")
end

DissectorTable.get("ip.proto"):add(253, keycast)
