DROP FUNCTION IF EXISTS phone_number_route(text);
DROP TABLE IF EXISTS sip_trunks;
DROP TABLE IF EXISTS phone_numbers;
